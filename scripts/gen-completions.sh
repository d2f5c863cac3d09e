#!/usr/bin/env bash
# Regenerates completions/ from the built kiln binary (CI fails when they are stale).
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=${KILN:-build/bin/kiln}
"$kiln" completion bash > completions/kiln.bash
"$kiln" completion zsh > completions/_kiln
"$kiln" completion fish > completions/kiln.fish
