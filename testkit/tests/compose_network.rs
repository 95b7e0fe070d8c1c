//! The Docker path held together without a container engine:
//! docker-compose.localstack.yml, env.local.json (the variables `sam local
//! invoke --docker-network ticketing` gives each function) and the
//! README's commands agree on service names, ports, listeners, secrets and
//! topic names. What the containers do is not run here; what they are told is.

use serde_json::Value;
use shared::config::TopicNames;
use shared::secrets::LOCAL_SECRET_NAMES;
use testkit::samples::root;

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.localstack.yml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn env_local() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(root().join("env.local.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

/// `service`'s environment variable `name`.
fn service_env<'a>(compose: &'a Value, service: &str, name: &str) -> Option<&'a str> {
    compose["services"][service]["environment"][name].as_str()
}

/// The brokers' addresses inside the network: each one's INTERNAL listener.
fn internal_brokers(compose: &Value) -> Vec<String> {
    let services = compose["services"].as_object().unwrap();
    let mut brokers: Vec<String> = services
        .keys()
        .filter_map(|name| service_env(compose, name, "KAFKA_ADVERTISED_LISTENERS"))
        .filter_map(|listeners| {
            listeners
                .split(',')
                .find_map(|l| l.strip_prefix("INTERNAL://").map(str::to_owned))
        })
        .collect();
    brokers.sort();
    brokers
}

/// The port `service` listens on inside the network.
fn listening_port(compose: &Value, service: &str) -> Option<u16> {
    match service {
        // LocalStack's edge port.
        "localstack" => Some(4566),
        "sandbox" => service_env(compose, service, "SANDBOX_ADDR")?
            .rsplit(':')
            .next()?
            .parse()
            .ok(),
        broker => service_env(compose, broker, "KAFKA_LISTENERS")?
            .split(',')
            .find_map(|l| l.strip_prefix("INTERNAL://:"))?
            .parse()
            .ok(),
    }
}

/// `host:port` of a URL or a broker address.
fn host_port(address: &str) -> (String, u16) {
    let rest = address.split("://").last().unwrap();
    let authority = rest.split('/').next().unwrap();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{address} has no port"));
    (host.to_owned(), port.parse().unwrap())
}

#[test]
fn every_endpoint_in_env_local_json_names_a_compose_service_on_a_port_it_listens_on() {
    let compose = compose();
    let brokers = internal_brokers(&compose);
    assert_eq!(brokers.len(), 3, "{brokers:?}");
    for (function, vars) in env_local() {
        for (name, value) in vars.as_object().unwrap() {
            let value = value.as_str().unwrap();
            for host_only in ["127.0.0.1", "localhost", "host.docker.internal"] {
                assert!(
                    !value.contains(host_only),
                    "{function}: {name}={value}: a container cannot reach the host that way"
                );
            }
            let addresses: Vec<&str> = match name.as_str() {
                "AWS_ENDPOINT_URL" | "TELEGRAM_API_BASE_URL" | "DATA_PLATFORM_URL" => vec![value],
                "KAFKA_BOOTSTRAP_SERVERS" => {
                    let mut listed: Vec<String> = value.split(',').map(str::to_owned).collect();
                    listed.sort();
                    assert_eq!(
                        listed, brokers,
                        "{function}: every broker, by its internal listener"
                    );
                    value.split(',').collect()
                }
                _ => continue,
            };
            for address in addresses {
                let (host, port) = host_port(address);
                assert_eq!(
                    listening_port(&compose, &host),
                    Some(port),
                    "{function}: {name}={value}: no compose service {host} listening on {port}"
                );
            }
        }
    }
}

#[test]
fn every_secret_a_function_reads_is_one_compose_init_stores_and_none_points_at_127_0_0_1() {
    let compose = compose();
    for (function, vars) in env_local() {
        for (name, id) in vars.as_object().unwrap() {
            let Some(variable) = name.strip_suffix("_SECRET_ID") else {
                continue;
            };
            let id = id.as_str().unwrap();
            assert!(
                LOCAL_SECRET_NAMES.contains(&(variable, id)),
                "{function}: {name}={id} is not a secret `ops provision` stores"
            );
            let value = service_env(&compose, "init", variable).unwrap_or_else(|| {
                panic!("{function} reads {id}, but init sets no {variable} to store in it")
            });
            assert!(
                !value.contains("127.0.0.1") && !value.contains("localhost"),
                "init stores {variable}={value}: a function in a container would call itself"
            );
        }
    }
}

#[test]
fn the_readmes_docker_commands_use_the_compose_network_files_and_default_topics() {
    let compose = compose();
    assert_eq!(
        compose["networks"]["default"]["name"], "ticketing",
        "the services' network has a fixed name, whatever the checkout's folder"
    );
    let readme = readme();
    let invokes: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("sam local invoke "))
        .collect();
    assert_eq!(invokes.len(), 2, "a hold and a payment");
    let functions = env_local();
    for line in &invokes {
        for needed in [
            " --docker-network ticketing ",
            "--env-vars env.local.json",
            "EndpointUrl=http://localstack:4566",
        ] {
            assert!(line.contains(needed), "{line}: needs {needed}");
        }
        let function = line.split_whitespace().nth(3).unwrap();
        assert!(functions.contains_key(function), "{line}: no {function}");
        let event = line
            .split(" -e ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        assert!(root().join(event).is_file(), "{line}: no {event}");
    }
    assert!(readme.contains("ops -- seed --sample-events events"));
    let consumer = readme
        .lines()
        .find(|l| l.contains("kafka-console-consumer.sh"))
        .expect("a console consumer command");
    let service = consumer
        .split(" exec ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let (host, port) = host_port(
        consumer
            .split("--bootstrap-server ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap(),
    );
    assert_eq!(host, service, "{consumer}");
    assert_eq!(listening_port(&compose, service), Some(port), "{consumer}");
    let topic = consumer
        .split("--topic ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(TopicNames::default().all().contains(&topic), "{consumer}");
    assert!(readme.contains("docker compose -f docker-compose.localstack.yml up --wait"));
    assert!(readme.contains("docker compose -f docker-compose.localstack.yml down -v"));
}
