#!/usr/bin/env bash
# Backup of a store holding TOKENS refresh tokens (and TOKENS/10 revoked
# jtis), on SQLite and on PostgreSQL: wall-clock seconds and file size of
# `keyward backup`, `keyward backup verify` and `keyward restore` (into an
# empty store of the same backend), beside each database's own tool measured
# in the same run on the same data as the baseline (SQLite: `sqlite3 .backup`,
# the online backup API; PostgreSQL: `pg_dump` of the store's schema).
#
# The store is made by `keyward init` and `clients create` (real keys,
# clients and audit chain); the tokens are seeded with one SQL statement of
# realistic rows (random 32-byte hashes, families, subjects, access jtis).
#
# usage: scripts/bench-backup.sh [BIN]   (default: this tree's release build)
#   TOKENS (default 100000); PG_URL (default postgres://postgres@127.0.0.1:5432/test,
#   empty skips PostgreSQL); needs sqlite3, psql and pg_dump.
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS="${TOKENS:-100000}"
PG_URL="${PG_URL-postgres://postgres@127.0.0.1:5432/test}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/keyward-target}"
if [ $# -eq 0 ]; then
  cargo build --release -q -p keyward
  set -- "$CARGO_TARGET_DIR/release/keyward"
fi
WORK="$(mktemp -d)"
SCHEMAS=()
cleanup() {
  for s in "${SCHEMAS[@]}"; do psql "$PG_URL" -q -c "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
# A private copy: a concurrent build cannot swap the binary mid-run.
cp "$1" "$WORK/keyward"
KW="$WORK/keyward"
unset KEYWARD_DATABASE_URL KEYWARD_ROOT_KEY KEYWARD_ROOT_KEY_FILE KEYWARD_DATA_DIR

# secs CMD... -> wall-clock seconds of CMD (its output discarded)
secs() { local t0; t0=$(date +%s.%N); "$@" >/dev/null; python3 -c "print('%.2f' % ($(date +%s.%N) - $t0))"; }
mb() { python3 -c "import os; print('%.1f' % (os.path.getsize('$1') / 1e6))"; }
ratio() { python3 -c "print('%.1f' % ($1 / max($2, 0.01)))"; }

# new_store DIR [URL]: an initialized store with one client and a rotation; prints the client id.
new_store() {
  local dir="$1" url="${2:-}"
  local env=(KEYWARD_DATA_DIR="$dir")
  [ -n "$url" ] && env+=(KEYWARD_DATABASE_URL="$url")
  env "${env[@]}" "$KW" init --issuer http://127.0.0.1:9 --alg ES256 >/dev/null
  env "${env[@]}" "$KW" keys rotate --env default >/dev/null
  env "${env[@]}" "$KW" clients create --env default --name bench --scopes orders.read --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])'
}

# fresh_dir NAME: a data dir holding only the source's root key.
fresh_dir() { mkdir -m 700 "$WORK/$1"; cp "$WORK/$2/root.key" "$WORK/$1/root.key"; }

new_schema() {
  local s="kw_bench_$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
  psql "$PG_URL" -q -c "CREATE SCHEMA $s" >/dev/null
  SCHEMAS+=("$s")
  echo "$s"
}
schema_url() { local sep='?'; [[ $PG_URL == *\?* ]] && sep='&'; echo "${PG_URL}${sep}options=-c%20search_path%3D$1"; }

printf '%-9s %8s %9s %8s %10s %9s %7s %9s %10s\n' backend tokens backup_s size_MB baseline_s base_MB ratio verify_s restore_s

# --- SQLite
cid=$(new_store "$WORK/sq")
now=$(date +%s)
sqlite3 "$WORK/sq/keyward.db" <<SQL
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < $TOKENS)
INSERT INTO refresh_tokens (token_hash, env, client_id, family_id, subject, scope, audience, extra,
  issued_at, expires_at, rotated_at, revoked_at, parent, access_jti, access_exp)
SELECT randomblob(32), 'default', '$cid', lower(hex(randomblob(16))), 'user-' || i, 'orders.read', NULL,
  '{"roles":["reader"]}', $now - i, $now + 86400, NULL, NULL, CASE WHEN i % 3 = 0 THEN randomblob(32) END,
  lower(hex(randomblob(16))), $now + 3600 FROM c;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < $TOKENS / 10)
INSERT INTO revocations (env, jti, exp, revoked_at)
SELECT 'default', lower(hex(randomblob(16))), $now + 3600, $now FROM c;
SQL
b=$(secs env KEYWARD_DATA_DIR="$WORK/sq" "$KW" backup --out "$WORK/sqlite.kwb")
base=$(secs sqlite3 "$WORK/sq/keyward.db" ".backup '$WORK/baseline.db'")
v=$(secs "$KW" backup verify "$WORK/sqlite.kwb")
fresh_dir sq-restored sq
r=$(secs env KEYWARD_DATA_DIR="$WORK/sq-restored" "$KW" restore "$WORK/sqlite.kwb")
printf '%-9s %8s %9s %8s %10s %9s %7s %9s %10s\n' sqlite "$TOKENS" "$b" "$(mb "$WORK/sqlite.kwb")" \
  "$base" "$(mb "$WORK/baseline.db")" "$(ratio "$b" "$base")" "$v" "$r"

# --- PostgreSQL
if [ -n "$PG_URL" ]; then
  s=$(new_schema); url=$(schema_url "$s")
  cid=$(new_store "$WORK/pg" "$url")
  psql "$url" -q <<SQL
INSERT INTO refresh_tokens (token_hash, env, client_id, family_id, subject, scope, audience, extra,
  issued_at, expires_at, rotated_at, revoked_at, parent, access_jti, access_exp)
SELECT decode(md5(random()::text) || md5(random()::text), 'hex'), 'default', '$cid', md5(random()::text),
  'user-' || i, 'orders.read', NULL, '{"roles":["reader"]}', $now - i, $now + 86400, NULL, NULL,
  CASE WHEN i % 3 = 0 THEN decode(md5(random()::text) || md5(random()::text), 'hex') END,
  md5(random()::text), $now + 3600 FROM generate_series(1, $TOKENS) AS i;
INSERT INTO revocations (env, jti, exp, revoked_at)
SELECT 'default', md5(random()::text), $now + 3600, $now FROM generate_series(1, $TOKENS / 10);
ANALYZE;
SQL
  b=$(secs env KEYWARD_DATA_DIR="$WORK/pg" KEYWARD_DATABASE_URL="$url" "$KW" backup --out "$WORK/pg.kwb")
  base=$(secs sh -c "pg_dump '$PG_URL' -n $s > '$WORK/baseline.sql'")
  v=$(secs "$KW" backup verify "$WORK/pg.kwb")
  s2=$(new_schema); fresh_dir pg-restored pg
  r=$(secs env KEYWARD_DATA_DIR="$WORK/pg-restored" KEYWARD_DATABASE_URL="$(schema_url "$s2")" "$KW" restore "$WORK/pg.kwb")
  printf '%-9s %8s %9s %8s %10s %9s %7s %9s %10s\n' postgres "$TOKENS" "$b" "$(mb "$WORK/pg.kwb")" \
    "$base" "$(mb "$WORK/baseline.sql")" "$(ratio "$b" "$base")" "$v" "$r"
fi
echo "backup_s, verify_s, restore_s: keyward (binary $1); baseline_s: sqlite3 .backup / pg_dump -n on the same data; ratio = backup_s / baseline_s"
