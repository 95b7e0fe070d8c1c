//! The local stack's script with a stack already up (docker-compose's
//! LocalStack and Kafka, or another `make up`): it uses what listens on 4566
//! and 9092 and installs, builds and starts nothing those replace.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use testkit::samples::root;
use testkit::unique;

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn services_use_what_already_listens_and_install_build_or_start_nothing_it_replaces() {
    assert!(
        listening(4566) && listening(9092),
        "make test's moto and tansu (or containers) listen on 4566 and 9092"
    );
    // An empty cache: had it installed moto or built tansu, they would be here.
    let scratch = std::env::temp_dir().join(unique("stack-scripts"));
    let (cache, state) = (scratch.join("cache"), scratch.join("state"));
    std::fs::create_dir_all(&cache).unwrap();

    let run = Command::new(root().join("scripts/local-stack.sh"))
        .arg("services")
        .env("PIPELINE_CACHE_DIR", &cache)
        .env("PIPELINE_STATE_DIR", &state)
        .output()
        .unwrap();

    let said = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "{said}");
    assert!(
        said.contains("127.0.0.1:4566 is already listening (LocalStack or moto): using it; moto is neither installed nor started"),
        "{said}"
    );
    assert!(
        said.contains("127.0.0.1:9092 is already listening (a Kafka container or tansu): using it; tansu is neither built nor started"),
        "{said}"
    );
    assert_eq!(entries(&cache), Vec::<String>::new(), "nothing installed");
    assert_eq!(
        entries(&state.join("pids")),
        Vec::<String>::new(),
        "nothing started"
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}
