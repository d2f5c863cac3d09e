#!/usr/bin/env bash
# Regenerates completions/ and man/ from the built kiln binary. Tests fail when they are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=${KILN:-build/bin/kiln}
mkdir -p completions man
"$kiln" completion bash > completions/kiln.bash
"$kiln" completion zsh > completions/_kiln
"$kiln" completion fish > completions/kiln.fish
rm -f man/*.1
"$kiln" man --dir man >/dev/null
