#!/usr/bin/env bash
# Regenerates crates/kawal-auth/data/common-passwords.txt: the "passwords" frequency list that
# zxcvbn (MIT licence; the list comes from Xato's corpus of leaked passwords, most common first)
# ships, one password per line. Needs the zxcvbn crate's source in the cargo registry
# (`cargo fetch` after building kawal-auth puts it there).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/zxcvbn-3.* | tail -n 1)
out=crates/kawal-auth/data/common-passwords.txt
{
  echo "# Common passwords, most frequent first: zxcvbn ${src##*-} frequency list \"passwords\" (MIT),"
  echo "# from Xato's corpus of leaked passwords. Regenerate with scripts/gen-blocklist.sh."
  sed -n 's/^const PASSWORDS: &str = "\(.*\)";$/\1/p' "$src/src/frequency_lists.rs" | tr ',' '\n'
} > "$out"
echo "$(grep -vc '^#' "$out") passwords in $out"
