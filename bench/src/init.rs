//! Init: each function's release `bootstrap` started under a local Lambda Runtime
//! API, timed from exec to its first `GET /next` (Lambda's init phase), then given
//! its sample event from `events/`; its peak RSS (VmHWM) is read after that one
//! invocation. Baseline: a hello-world `lambda_runtime` binary built the same way.

use crate::Error;
use crate::report::{Figure, Report, Samples};
use local_runner::notification_sandbox::{self, NotificationSandbox};
use local_runner::runtime_api::{Outcome, RuntimeApi};
use serde_json::Value;
use shared::config::{TableNames, TopicNames};
use shared::dynamodb::TicketingRepository;
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

/// What each function is given: its sample event, and the local secrets as
/// values (so the figure is the binary's own start, not moto's latency).
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
        let env = |api: &str, name: &str| {
            let mut env = lambda_env(api, name, tables, topics);
            for var in ["JWT_SECRET", "TELEGRAM_BOT_TOKEN"] {
                env.push((var.into(), std::env::var(var).unwrap_or_default()));
            }
            env.push((
                "TELEGRAM_CHAT_ID".into(),
                notification_sandbox::SANDBOX_CHAT_ID.into(),
            ));
            env.push((
                "TELEGRAM_API_BASE_URL".into(),
                format!("http://{sandbox_addr}"),
            ));
            // The feed's platform: the sandbox's, with its keys as values.
            let platform = notification_sandbox::data_platform_settings(sandbox_addr);
            env.extend([
                ("DATA_PLATFORM_URL".into(), platform.url),
                (
                    "DATA_PLATFORM_API_KEY".into(),
                    platform.api_key.expose().to_owned(),
                ),
                (
                    "DATA_PLATFORM_PSEUDONYM_KEY".into(),
                    platform.pseudonym_key.expose().to_owned(),
                ),
            ]);
            env
        };

        // Interleaved (one start of each binary per round), so a noisy moment
        // of the machine touches every binary alike.
        let mut init: Vec<Samples> = vec![Samples::default(); subjects.len()];
        let mut rss: Vec<Samples> = vec![Samples::default(); subjects.len()];
        for round in 0..self.runs {
            for (i, s) in subjects.iter().enumerate() {
                let run =
                    start_and_invoke(&s.name, &s.path, |api| env(api, &s.name), s.event.clone())
                        .await?;
                init[i].push(run.init.as_secs_f64() * 1000.0);
                rss[i].push(run.peak_rss_kib as f64 / 1024.0);
            }
            eprintln!("init: round {}/{} done", round + 1, self.runs);
        }
        let (hello, functions) = subjects.split_last().expect("hello-world is a subject");
        for (i, s) in functions.iter().enumerate() {
            report.add(
                Figure::of("init", &format!("{} init", s.name), "ms", &init[i])
                    .against(&format!("{} init", hello.name), &init[functions.len()]),
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
