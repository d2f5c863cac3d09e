#!/usr/bin/env bash
# Regenerates completions/ and man/ from the built programs. Tests fail when they are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=${KILN:-build/bin/kiln}
bin=$(dirname "$kiln")
mkdir -p completions man
"$kiln" completion bash > completions/kiln.bash
"$kiln" completion zsh > completions/_kiln
"$kiln" completion fish > completions/kiln.fish
rm -f man/*.1 man/*.8
"$kiln" man --dir man >/dev/null
"$bin/kiln-service" --man-page > man/kiln-service.8
"$bin/kiln-board-emu" --man-page > man/kiln-board-emu.1
