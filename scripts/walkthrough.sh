#!/usr/bin/env bash
# Runs the README's walk-through (the sh block after `<!-- walkthrough -->`) as a
# user pasting it would, at the repository's root, on `make up`'s stack, which it
# starts (moto and tansu are reused when already up). `make test` runs it so the
# README's commands stay true; a command that fails fails it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
block=$(python3 - <<'PY'
import re, sys
text = open("README.md", encoding="utf-8").read()
found = re.search(r"<!-- walkthrough -->\n```sh\n(.*?)\n```", text, re.S)
if not found:
    sys.exit("README.md has no sh block after <!-- walkthrough -->")
print(found.group(1))
PY
)
scripts/local-stack.sh up
echo "== the README's walk-through" >&2
# A fresh shell, as a user's; bounded, since it waits for the message.
timeout 300 bash -euo pipefail -c "$block"
echo "== the README's walk-through ran" >&2
