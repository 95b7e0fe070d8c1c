//! Init: each function's release `bootstrap` started under a local Lambda Runtime
//! API, timed from exec to its first `GET /next` (Lambda's init phase), then given
//! its sample event from `events/`; its peak RSS (VmHWM) is read after that one
//! invocation. Baseline: a hello-world `lambda_runtime` binary built the same way.

use crate::Error;
use crate::report::{Figure, Report, Samples};
use aws_config::SdkConfig;
use local_runner::notification_sandbox::{self, NotificationSandbox};
use local_runner::runtime_api::{Outcome, RuntimeApi};
use local_runner::template::{TEMPLATE, variables_of};
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

/// Reads `bootstrap` whole, so that every page of it is in the page cache
/// when it starts, whichever build it is. A fault maps the cached pages
/// around it too, so a binary written a minute ago (all of it cached) shows
/// up to 1 MiB more `RssFile` than the same binary written hours ago: without
/// this, builds compared in one run differ by when they were copied.
fn in_page_cache(bootstrap: &Path) -> Result<(), Error> {
    std::fs::read(bootstrap).map(drop).map_err(|e| {
        Error::Measure(format!(
            "{bootstrap:?} cannot be read ({e}): `make bench` builds it (scripts/bench.sh)"
        ))
    })
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

/// The local secrets a function may read, as values: the figure is then the
/// binary's own start, not the store's latency.
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

/// How a start is given its secrets.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// As values in its environment (the local stack's way).
    Values,
    /// As `<NAME>_SECRET_ID`s, read from Secrets Manager at init (AWS's way).
    SecretsManager,
}

/// A binary, its sample event, and what template.yaml gives it to read at
/// init: which of the local secrets (by name) and whether the data
/// platform's URL.
struct Subject {
    name: String,
    path: PathBuf,
    event: Value,
    secrets: Vec<String>,
    platform_url: bool,
}

impl Subject {
    /// Function `logical_id`'s `binary`, given to read at init what
    /// template.yaml gives it: those of `secrets` it names a
    /// `<NAME>_SECRET_ID` for, and the data platform's URL if it sets one.
    fn as_deployed(
        logical_id: &str,
        binary: &str,
        path: PathBuf,
        event: Value,
        secrets: &[(String, String)],
    ) -> Result<Subject, Error> {
        let variables = variables_of(TEMPLATE, logical_id)?;
        let named = |var: &str| variables.iter().any(|v| v == var);
        Ok(Subject {
            name: binary.to_owned(),
            path,
            event,
            secrets: secrets
                .iter()
                .map(|(var, _)| var.clone())
                .filter(|var| named(&format!("{var}_SECRET_ID")))
                .collect(),
            platform_url: named("DATA_PLATFORM_URL"),
        })
    }

    /// The ways it is started: with its secrets as values, and, when it reads
    /// any, from Secrets Manager.
    fn ways(&self) -> &'static [Way] {
        match self.secrets.is_empty() {
            true => &[Way::Values],
            false => &[Way::Values, Way::SecretsManager],
        }
    }
}

/// Everything a start is given but Lambda's own variables.
struct Given {
    tables: TableNames,
    topics: TopicNames,
    sandbox_addr: std::net::SocketAddr,
    values: Vec<(String, String)>,
    ids: Vec<(String, String)>,
}

impl Given {
    /// `subject`'s environment under the Runtime API at `api`, its secrets
    /// given `way`: only what template.yaml gives it (the notifier given the
    /// platform's URL would read the platform's keys too).
    fn env(&self, api: &str, subject: &Subject, way: Way) -> Vec<(String, String)> {
        let mut env = lambda_env(api, &subject.name, &self.tables, &self.topics);
        let secrets = match way {
            Way::Values => &self.values,
            Way::SecretsManager => &self.ids,
        };
        let read = |var: &str| {
            let var = var.strip_suffix("_SECRET_ID").unwrap_or(var);
            subject.secrets.iter().any(|s| s == var)
        };
        env.extend(secrets.iter().filter(|(var, _)| read(var)).cloned());
        env.extend([
            (
                "TELEGRAM_CHAT_ID".into(),
                notification_sandbox::SANDBOX_CHAT_ID.into(),
            ),
            (
                "TELEGRAM_API_BASE_URL".into(),
                format!("http://{}", self.sandbox_addr),
            ),
        ]);
        if subject.platform_url {
            let platform = notification_sandbox::data_platform_settings(self.sandbox_addr);
            env.push(("DATA_PLATFORM_URL".into(), platform.url));
        }
        env
    }
}

/// One subject's samples: init per way (values, then Secrets Manager when
/// it reads secrets), peak RSS with the values.
#[derive(Default, Clone)]
struct Sampled {
    init: [Samples; 2],
    rss: Samples,
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
        let values = local_secrets(sandbox_addr);
        let subjects = self.subjects(hold, &values)?;
        let ids = store_in_secrets_manager(aws, &values).await?;
        let given = Given {
            tables: tables.clone(),
            topics: topics.clone(),
            sandbox_addr,
            values,
            ids,
        };
        let sampled = self.sample(&subjects, &given).await?;
        let (hello, functions) = sampled.split_last().expect("hello-world is a subject");
        let hello_name = &subjects[functions.len()].name;
        for (s, f) in subjects.iter().zip(functions) {
            report.add(
                Figure::of("init", &format!("{} init", s.name), "ms", &f.init[0])
                    .against(&format!("{hello_name} init"), &hello.init[0]),
            );
        }
        for (s, f) in subjects
            .iter()
            .zip(functions)
            .filter(|(s, _)| s.ways().len() == 2)
        {
            let metric = format!("{} init (Secrets Manager)", s.name);
            report.add(
                Figure::of("init", &metric, "ms", &f.init[1])
                    .against(&format!("{hello_name} init"), &hello.init[0]),
            );
        }
        for (s, f) in subjects.iter().zip(functions) {
            report.add(
                Figure::of("init", &format!("{} peak RSS", s.name), "MiB", &f.rss)
                    .against(&format!("{hello_name} peak RSS"), &hello.rss),
            );
        }
        Ok(())
    }

    /// Starts every subject once per round in each of its ways, interleaved
    /// so that a noisy moment of the machine touches every binary alike.
    async fn sample(&self, subjects: &[Subject], given: &Given) -> Result<Vec<Sampled>, Error> {
        let mut sampled = vec![Sampled::default(); subjects.len()];
        for round in 0..self.runs {
            for (s, samples) in subjects.iter().zip(sampled.iter_mut()) {
                for (i, way) in s.ways().iter().enumerate() {
                    let env = |api: &str| given.env(api, s, *way);
                    let run = start_and_invoke(&s.name, &s.path, env, s.event.clone()).await?;
                    samples.init[i].push(run.init.as_secs_f64() * 1000.0);
                    if *way == Way::Values {
                        samples.rss.push(run.peak_rss_kib as f64 / 1024.0);
                    }
                }
            }
            eprintln!("init: round {}/{} done", round + 1, self.runs);
        }
        Ok(sampled)
    }

    /// The seven functions' release bootstraps, each with a sample event it
    /// answers and what template.yaml gives it to read at init, then
    /// hello-world last (the baseline); an error names a missing binary.
    fn subjects(
        &self,
        hold: serde_json::Value,
        secrets: &[(String, String)],
    ) -> Result<Vec<Subject>, Error> {
        let events = [
            hold,
            payment_of("00000000-0000-4000-8000-000000000000"),
            sample("outbox-stream.json"),
            sample("kafka-self-managed.json"),
            sample("schedule.json"),
            sample("schedule.json"),
            sample("kafka-self-managed.json"),
        ];
        let mut subjects = Vec::new();
        for ((logical_id, binary), event) in FUNCTIONS.iter().zip(events) {
            let path = self.bootstrap_dir.join(logical_id).join("bootstrap");
            subjects.push(Subject::as_deployed(
                logical_id, binary, path, event, secrets,
            )?);
        }
        subjects.push(Subject {
            name: "hello-world".into(),
            path: self.hello.clone(),
            event: serde_json::json!({"hello": "world"}),
            secrets: Vec::new(),
            platform_url: false,
        });
        for subject in &subjects {
            in_page_cache(&subject.path)?;
        }
        Ok(subjects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given() -> Given {
        let secret = |var: &str, value: &str| (var.to_owned(), value.to_owned());
        Given {
            tables: TableNames::with_prefix("bench"),
            topics: TopicNames::default(),
            sandbox_addr: "127.0.0.1:8081".parse().unwrap(),
            values: vec![
                secret("JWT_SECRET", "jwt"),
                secret("TELEGRAM_BOT_TOKEN", "bot"),
                secret("DATA_PLATFORM_API_KEY", "key"),
            ],
            ids: vec![
                secret("JWT_SECRET_SECRET_ID", "bench/jwt"),
                secret("TELEGRAM_BOT_TOKEN_SECRET_ID", "bench/bot"),
                secret("DATA_PLATFORM_API_KEY_SECRET_ID", "bench/key"),
            ],
        }
    }

    fn started(logical_id: &str, way: Way) -> (Subject, Vec<String>) {
        let given = given();
        let subject =
            Subject::as_deployed(logical_id, "f", PathBuf::new(), Value::Null, &given.values)
                .unwrap();
        let env = given.env("127.0.0.1:9001", &subject, way);
        (subject, env.into_iter().map(|(k, _)| k).collect())
    }

    #[test]
    fn each_function_is_given_only_the_secrets_and_url_the_template_gives_it() {
        let (dlq_retry, env) = started("DlqRetryFunction", Way::SecretsManager);
        assert_eq!(
            dlq_retry.secrets,
            ["TELEGRAM_BOT_TOKEN", "DATA_PLATFORM_API_KEY"]
        );
        for var in [
            "TELEGRAM_BOT_TOKEN_SECRET_ID",
            "DATA_PLATFORM_API_KEY_SECRET_ID",
            "DATA_PLATFORM_URL",
        ] {
            assert!(env.iter().any(|v| v == var), "{var} in {env:?}");
        }
        assert!(
            !env.iter()
                .any(|v| v == "TELEGRAM_BOT_TOKEN" || v.starts_with("JWT")),
            "{env:?}"
        );

        let (_, env) = started("NotifierFunction", Way::Values);
        assert!(env.iter().any(|v| v == "TELEGRAM_BOT_TOKEN"), "{env:?}");
        assert!(
            !env.iter().any(|v| v.starts_with("DATA_PLATFORM")),
            "{env:?}"
        );
    }

    #[test]
    fn a_function_that_reads_no_secret_is_started_one_way_only() {
        let (relay, env) = started("OutboxRelayFunction", Way::Values);
        assert!(relay.secrets.is_empty());
        assert!(relay.ways() == [Way::Values]);
        let given = given();
        let secret = |v: &String| given.values.iter().chain(&given.ids).any(|(k, _)| k == v);
        assert!(!env.iter().any(secret), "{env:?}");
        let (payment, _) = started("PaymentFunction", Way::Values);
        assert!(payment.ways() == [Way::Values, Way::SecretsManager]);
    }
}
