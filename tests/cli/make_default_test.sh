#!/usr/bin/env bash
# corpora/make-default: the default corpus is exactly the fortunes package's files but
# ascii-art, whatever else lies in their directory, as text (overstrikes resolved, no control
# characters but newline and tab), and a result that does not match the manifest's size and
# SHA-256 is a one-line error that leaves no output file. Skipped (exit 77) where the fortunes
# package is not installed.
#   tests/cli/make_default_test.sh PATH/TO/corpora/make-default
set -uo pipefail
make_default="$1"
manifest="$(dirname "$make_default")/manifest.json"
package_dir=/usr/share/games/fortunes
if [ "$(dpkg-query -W -f='${Status}' fortunes 2> /dev/null)" != "install ok installed" ]; then
  echo "SKIP: the fortunes package is not installed (apt-get install fortunes)"
  exit 77
fi
program="$make_default"
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"

# The package as installed: the result has the manifest's size and SHA-256.
if "$make_default" --out "$work/default.txt" > /dev/null 2> "$work/err"; then pass; else fail "default: $(cat "$work/err")"; fi
want_sha256="$(jq -r .fortunes.sha256 "$manifest")"
want_bytes="$(jq -r .fortunes.bytes "$manifest")"
[ "$(sha256sum < "$work/default.txt" | cut -d' ' -f1)" = "$want_sha256" ] && pass || fail "default: sha256 differs from the manifest"
[ "$(stat -c %s "$work/default.txt")" = "$want_bytes" ] && pass || fail "default: size differs from the manifest"

# Text, not pictures: nothing of ascii-art (one of its pictures is captioned "Frobtech, Inc."),
# no backspace, bell or other control character, and overstruck words as a terminal shows them
# (computers has "it's *____^H^H^H^Honly* ones": underlined "only").
grep -q "Frobtech" "$work/default.txt" && fail "ascii-art is in the corpus" || pass
LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f]' "$work/default.txt" && fail "control characters in the corpus" || pass
grep -qxF "Calm down, it's *only* ones and zeroes." "$work/default.txt" && pass || fail "overstrike not resolved"
# ascii-art changed or gone: the result is the same (it is not read).
cp -a "$package_dir" "$work/no-art"
echo "One more picture." >> "$work/no-art/ascii-art"
if "$make_default" --from "$work/no-art" --out "$work/no-art.txt" > /dev/null 2> "$work/err"; then pass; else fail "changed ascii-art: $(cat "$work/err")"; fi
rm "$work/no-art/ascii-art"
if "$make_default" --from "$work/no-art" --out "$work/no-art.txt" > /dev/null 2> "$work/err"; then pass; else fail "no ascii-art: $(cat "$work/err")"; fi

# A copy of the package's directory with fortune files of another package beside them (sorting
# first, in the middle and last): the result is the same.
cp -a "$package_dir" "$work/extra"
printf 'An extra fortune.\n%%\nAnother one.\n' > "$work/extra/aaa-extra"
printf '\xe4\xbd\xa0\xe5\xa5\xbd\n%%\n' > "$work/extra/lao-zi"
printf 'zzz\n%%\n' > "$work/extra/zzz-extra"
if "$make_default" --from "$work/extra" --out "$work/extra.txt" > /dev/null 2> "$work/err"; then pass; else fail "extra files: $(cat "$work/err")"; fi
cmp -s "$work/default.txt" "$work/extra.txt" && pass || fail "extra files changed the result"

# A changed fortune file: one-line error; no output file, not even an earlier one.
cp -a "$package_dir" "$work/changed"
echo "One more line." >> "$work/changed/art"
echo "stale" > "$work/changed.txt"
expect_error "changed file" "manifest.json says $want_bytes bytes" --from "$work/changed" --out "$work/changed.txt"
[ ! -e "$work/changed.txt" ] && pass || fail "changed file: $work/changed.txt left behind"
leftovers=$(find "$work" -maxdepth 1 -name '*.part*' | wc -l)
[ "$leftovers" -eq 0 ] && pass || fail "changed file: $leftovers temporary files left"

# A package file list that names a file the directory lacks; bad arguments.
{ dpkg-query -L fortunes; echo "$package_dir/no-such-fortunes"; } > "$work/list"
expect_error "missing file" "$package_dir/no-such-fortunes: missing" --file-list "$work/list" --out "$work/missing.txt"
[ ! -e "$work/missing.txt" ] && pass || fail "missing file: output written"
expect_error "unknown flag" "unknown argument '--form'" --form "$work/extra"
expect_error "flag without value" "--out needs a value" --out

finish
