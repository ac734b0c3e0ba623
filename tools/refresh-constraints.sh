#!/usr/bin/env bash
# Regenerates constraints.txt: the newest versions the project's ranges allow, resolved in a throwaway virtual
# environment, with the platform-specific CUDA stack left to torch's own exact requirements.
# Run it monthly (or when a dependency changes), run the tests against the result, and commit both together.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e ".[dev,postgres]"
{
  echo "# Exact versions that the tests pass with; used by every install command in README.md and by .ci/run."
  echo "# Regenerate with tools/refresh-constraints.sh. The CUDA stack (nvidia-*, cuda-*, triton) is pinned by torch."
  # decord has wheels for x86_64 only: its pin carries the same marker as its dependency in pyproject.toml.
  "$venv/bin/pip" freeze --exclude-editable | grep -viE '^(nvidia-|cuda-|triton==|-e |bigsister-ray)' \
    | sed -E 's/^(decord==[^;]+)$/\1; platform_machine == "x86_64" or platform_machine == "AMD64"/' | sort -f
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages"
