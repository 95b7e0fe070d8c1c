//! Init: each function's release `bootstrap` started under a local Lambda Runtime
//! API, timed from exec to its first `GET /next` (Lambda's init phase), then given
//! its sample event from `events/`; its peak RSS (VmHWM) is read after that one
//! invocation. Baseline: a hello-world `lambda_runtime` binary built the same way.

use crate::Error;
use crate::report::{Figure, Report, Samples};
use aws_config::SdkConfig;
use local_runner::notification_sandbox::{self, NotificationSandbox};
use local_runner::runtime_api::{Outcome, RuntimeApi};
use serde_json::Value;
use shared::config::Secret;
use shared::config::{TableNames, TopicNames};
use shared::dynamodb::TicketingRepository;
use shared::secrets::SecretStore;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::functions::{FUNCTIONS, lambda_env};
use testkit::samples::{payment_of, sample, seed_the_sample_world};

const INVOKE_TIMEOUT: Duration = Duration::from_secs(60);

/// One start of a binary: its init time, its peak RSS after one invocation, and
/// what it answered.
pub struct Started {
    pub init: Duration,
    pub peak_rss_kib: u64,
    pub outcome: Outcome,
}

/// The peak resident set of process `pid` so far, in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| Error::Measure(format!("reading /proc/{pid}/status: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| Error::Measure(format!("no VmHWM in /proc/{pid}/status")))
}

/// Starts `path` with only `env` (as Lambda does), hands it `event`, and kills it.
pub async fn start_and_invoke(
    name: &str,
    path: &Path,
    env: impl Fn(&str) -> Vec<(String, String)>,
    event: Value,
) -> Result<Started, Error> {
    let api = RuntimeApi::start(name).await?;
    let started = Instant::now();
    let mut child = Command::new(path)
        .env_clear()
        .envs(env(&api.endpoint()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::Measure(format!("{path:?} does not start: {e}")))?;
    let outcome = api.invoke(event, INVOKE_TIMEOUT).await;
    let measured = match (outcome, api.first_next_at()) {
        (Ok(outcome), Some(first_next)) => peak_rss_kib(child.id()).map(|peak_rss_kib| Started {
            init: first_next - started,
            peak_rss_kib,
            outcome,
        }),
        (Err(e), _) => Err(Error::Measure(format!("{name}: {e}"))),
        (Ok(_), None) => Err(Error::Measure(format!("{name} answered without asking"))),
    };
    let _ = child.kill();
    let _ = child.wait();
    measured
}

/// The local secrets every function may read, as values: the figure is then
/// the binary's own start, not the store's latency.
fn local_secrets(sandbox_addr: std::net::SocketAddr) -> Vec<(String, String)> {
    let platform = notification_sandbox::data_platform_settings(sandbox_addr);
    let from_env = |var: &str| (var.to_owned(), std::env::var(var).unwrap_or_default());
    vec![
        from_env("JWT_SECRET"),
        from_env("TELEGRAM_BOT_TOKEN"),
        (
            "DATA_PLATFORM_API_KEY".into(),
            platform.api_key.expose().to_owned(),
        ),
        (
            "DATA_PLATFORM_PSEUDONYM_KEY".into(),
            platform.pseudonym_key.expose().to_owned(),
        ),
    ]
}

/// The same secrets stored in Secrets Manager (moto's), as the template gives
/// them: each function is told `<NAME>_SECRET_ID` and reads its own at init,
/// as it does on AWS. moto answers one request at a time, so reads made at
/// the same time are served one after the other here.
async fn store_in_secrets_manager(
    aws: &SdkConfig,
    secrets: &[(String, String)],
) -> Result<Vec<(String, String)>, Error> {
    let store = SecretStore::new(aws);
    let mut ids = Vec::new();
    for (var, value) in secrets {
        let id = testkit::unique(&format!("bench/init/{}", var.to_lowercase()));
        store.put_secret(&id, &Secret::new(value.clone())).await?;
        ids.push((format!("{var}_SECRET_ID"), id));
    }
    Ok(ids)
}

/// What each function is given: its sample event (and the secrets, either way).
struct Subject {
    name: String,
    path: PathBuf,
    event: Value,
}

pub struct InitBench {
    pub bootstrap_dir: PathBuf,
    pub hello: PathBuf,
    pub runs: usize,
}

impl InitBench {
    pub async fn run(
        &self,
        report: &mut Report,
        aws: &SdkConfig,
        repo: &TicketingRepository,
        tables: &TableNames,
        topics: &TopicNames,
    ) -> Result<(), Error> {
        let sandbox = NotificationSandbox::default();
        let sandbox_addr = sandbox
            .serve("127.0.0.1:0".parse().expect("an address"))
            .await?;
        let hold = sample("reservation-hold.json");
        seed_the_sample_world(repo).await;
        let subjects = self.subjects(hold)?;
        let secrets = local_secrets(sandbox_addr);
        let in_secrets_manager = store_in_secrets_manager(aws, &secrets).await?;
        let env = |api: &str, name: &str, secrets: &[(String, String)]| {
            let mut env = lambda_env(api, name, tables, topics);
            env.extend(secrets.iter().cloned());
            env.extend([
                (
                    "TELEGRAM_CHAT_ID".into(),
                    notification_sandbox::SANDBOX_CHAT_ID.into(),
                ),
                (
                    "TELEGRAM_API_BASE_URL".into(),
                    format!("http://{sandbox_addr}"),
                ),
            ]);
            // Only where template.yaml sets it: the notifier would read the
            // platform's keys too, which it is not given on AWS.
            if ["data-platform-feed", "dlq-retry"].contains(&name) {
                let platform = notification_sandbox::data_platform_settings(sandbox_addr);
                env.push(("DATA_PLATFORM_URL".into(), platform.url));
            }
            env
        };

        // Interleaved (one start of each binary per round, each way of giving
        // the secrets), so a noisy moment of the machine touches every binary
        // alike.
        let ways = [secrets, in_secrets_manager];
        let mut init: Vec<[Samples; 2]> = vec![Default::default(); subjects.len()];
        let mut rss: Vec<Samples> = vec![Samples::default(); subjects.len()];
        for round in 0..self.runs {
            for (i, s) in subjects.iter().enumerate() {
                for (way, secrets) in ways.iter().enumerate() {
                    let run = start_and_invoke(
                        &s.name,
                        &s.path,
                        |api| env(api, &s.name, secrets),
                        s.event.clone(),
                    )
                    .await?;
                    init[i][way].push(run.init.as_secs_f64() * 1000.0);
                    if way == 0 {
                        rss[i].push(run.peak_rss_kib as f64 / 1024.0);
                    }
                }
            }
            eprintln!("init: round {}/{} done", round + 1, self.runs);
        }
        let (hello, functions) = subjects.split_last().expect("hello-world is a subject");
        for (i, s) in functions.iter().enumerate() {
            report.add(
                Figure::of("init", &format!("{} init", s.name), "ms", &init[i][0])
                    .against(&format!("{} init", hello.name), &init[functions.len()][0]),
            );
        }
        for (i, s) in functions.iter().enumerate() {
            report.add(
                Figure::of(
                    "init",
                    &format!("{} init (Secrets Manager)", s.name),
                    "ms",
                    &init[i][1],
                )
                .against(&format!("{} init", hello.name), &init[functions.len()][0]),
            );
        }
        for (i, s) in functions.iter().enumerate() {
            report.add(
                Figure::of("init", &format!("{} peak RSS", s.name), "MiB", &rss[i])
                    .against(&format!("{} peak RSS", hello.name), &rss[functions.len()]),
            );
        }
        Ok(())
    }

    /// The seven functions' release bootstraps, each with a sample event it
    /// answers, then hello-world last (the baseline); an error names a missing
    /// binary.
    fn subjects(&self, hold: serde_json::Value) -> Result<Vec<Subject>, Error> {
        let events = [
            hold,
            payment_of("00000000-0000-4000-8000-000000000000"),
            sample("outbox-stream.json"),
            sample("kafka-self-managed.json"),
            sample("schedule.json"),
            sample("schedule.json"),
            sample("kafka-self-managed.json"),
        ];
        let mut subjects: Vec<Subject> = FUNCTIONS
            .iter()
            .zip(events)
            .map(|((logical_id, binary), event)| Subject {
                name: (*binary).to_owned(),
                path: self.bootstrap_dir.join(logical_id).join("bootstrap"),
                event,
            })
            .collect();
        subjects.push(Subject {
            name: "hello-world".into(),
            path: self.hello.clone(),
            event: serde_json::json!({"hello": "world"}),
        });
        match subjects.iter().find(|s| !s.path.exists()) {
            Some(missing) => Err(Error::Measure(format!(
                "{:?} is missing: `make bench` builds it (scripts/bench.sh)",
                missing.path
            ))),
            None => Ok(subjects),
        }
    }
}
