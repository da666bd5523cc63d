#!/usr/bin/env bash
# Builds fuzz/corpus/<target>/ from the repository's fixtures, parsers and committed inputs, in
# the layout each target reads (see src/lib.rs). Run from anywhere; safe to rerun.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
corpus="$root/fuzz/corpus"
mkdir -p "$corpus"/{email,webhook,rules,form}
for f in "$root"/fixtures/*/*.eml; do cp "$f" "$corpus/email/"; done
# Webhook inputs: byte 0 picks the plugin (index among webhook plugins, sorted by id), byte 1 the
# mode; every fixture is seeded for every plugin so the fuzzer crosses formats.
for f in "$root"/fixtures/*/*.webhook.json; do
  for which in 0 1 2 3; do
    for mode in 0 1; do
      { printf "\\x$which\\x$mode"; cat "$f"; } > "$corpus/webhook/$(basename "$f" .json)-$which-$mode"
    done
  done
done
for f in "$root"/parsers/*.toml; do cp "$f" "$corpus/rules/"; done
for f in "$root"/tests/data/fuzz/form/* "$root"/tests/data/fuzz/email/* "$root"/tests/data/fuzz/webhook/* "$root"/tests/data/fuzz/rules/*; do
  [ -f "$f" ] || continue
  target="$(basename "$(dirname "$f")")"
  cp "$f" "$corpus/$target/"
done
# Forms: every email fixture as a Mailgun/SendGrid multipart post and a Postmark JSON post.
i=0
for f in "$root"/fixtures/*/*.eml; do
  i=$((i + 1))
  {
    printf 'multipart/form-data; boundary=FUZZ\n--FUZZ\r\nContent-Disposition: form-data; name="body-mime"\r\n\r\n'
    cat "$f"
    printf '\r\n--FUZZ\r\nContent-Disposition: form-data; name="email"\r\n\r\n'
    cat "$f"
    printf '\r\n--FUZZ--\r\n'
  } > "$corpus/form/multipart-$i"
done
echo "corpus: $(for t in email webhook rules form; do printf '%s=%s ' $t "$(ls "$corpus/$t" | wc -l)"; done)"
