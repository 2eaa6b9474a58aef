#!/usr/bin/env bash
# MinIO policies of a campaign's object store (least privilege; see infra/README.md,
# "Least privilege in the object store"). The JSON files beside this script are templates:
#   {{BUCKET}}  the bucket of the campaign's remote s3://BUCKET/PREFIX
#   {{PREFIX}}  its key prefix with a trailing slash ("lab/"), empty for a remote at the bucket's root
#   {{ROUND}}   a round's folder name, round-NNN (the annotator templates only)
#
#   policies.sh render ROLE STORE_URL [ROUND]         print ROLE's policy with the placeholders filled
#   policies.sh install ALIAS STORE_URL               create the campaign's reviewer and pipeline policies
#   policies.sh open-round ALIAS STORE_URL ROUND GROUP   create the round's annotator policies, attach to GROUP
#   policies.sh close-round ALIAS STORE_URL ROUND GROUP  detach them from GROUP and remove them
#
# ROLE: annotator-round, annotator-round-list, reviewer or pipeline. ALIAS: an `mc alias` with admin rights
# (e.g. `mc alias set lab http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"`). Policy names:
# <bucket>-<prefix>-reviewer, <bucket>-<prefix>-pipeline, <bucket>-<prefix>-annotator-round-NNN[-list].
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() { echo "policies.sh: $*" >&2; exit 2; }

# STORE_URL -> BUCKET, PREFIX ("lab/" or ""), NAME ("activeseg-lab")
parse_store() {
  [[ "$1" =~ ^s3://([a-z0-9][a-z0-9.-]*[a-z0-9])(/[A-Za-z0-9._/-]*)?$ ]] \
    || die "$1: expected s3://bucket/prefix (the campaign's --remote)"
  BUCKET="${BASH_REMATCH[1]}"
  local prefix="${BASH_REMATCH[2]#/}"
  while [[ "$prefix" == */ ]]; do prefix="${prefix%/}"; done
  [[ "$prefix" != *//* && "/$prefix/" != */./* && "/$prefix/" != */../* ]] || die "$1: not a plain key prefix"
  PREFIX="${prefix:+$prefix/}"
  NAME="$BUCKET${prefix:+-${prefix//\//-}}"
}

# ROUND number -> ROUND_NAME (round-NNN, as activeseg.core.util.round_name)
parse_round() {
  [[ "$1" =~ ^[0-9]+$ ]] && (( 10#$1 >= 1 )) || die "$1: expected a round number (1, 2, ...)"
  ROUND_NAME="$(printf 'round-%03d' "$((10#$1))")"
}

render() {  # ROLE STORE_URL [ROUND]
  local role="$1" template="$HERE/$1.json"
  [[ "$role" =~ ^(annotator-round|annotator-round-list|reviewer|pipeline)$ ]] || die "$role: unknown role"
  parse_store "$2"
  local round_name=""
  if [[ "$role" == annotator-* ]]; then
    [[ $# -ge 3 ]] || die "$role: needs a round number"
    parse_round "$3"
    round_name="$ROUND_NAME"
  fi
  local out
  out="$(sed -e "s|{{BUCKET}}|$BUCKET|g" -e "s|{{PREFIX}}|$PREFIX|g" -e "s|{{ROUND}}|$round_name|g" "$template")"
  [[ "$out" != *"{{"* ]] || die "$template: a placeholder is left"
  printf '%s\n' "$out"
}

create() {  # ALIAS POLICY_NAME ROLE STORE_URL [ROUND]
  local alias="$1" name="$2" file
  shift 2
  file="$(mktemp)"
  render "$@" >"$file"
  mc admin policy create "$alias" "$name" "$file"
  rm -f "$file"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  render)
    [[ $# -ge 2 ]] || die "usage: policies.sh render ROLE STORE_URL [ROUND]"
    render "$@"
    ;;
  install)
    [[ $# -eq 2 ]] || die "usage: policies.sh install ALIAS STORE_URL"
    parse_store "$2"
    create "$1" "$NAME-reviewer" reviewer "$2"
    create "$1" "$NAME-pipeline" pipeline "$2"
    echo "attach them: mc admin policy attach $1 $NAME-pipeline --user <the worker's access key>;" \
         "mc admin policy attach $1 $NAME-reviewer --group <reviewers>"
    ;;
  open-round)
    [[ $# -eq 4 ]] || die "usage: policies.sh open-round ALIAS STORE_URL ROUND GROUP"
    parse_store "$2"
    parse_round "$3"
    create "$1" "$NAME-annotator-$ROUND_NAME" annotator-round "$2" "$3"
    create "$1" "$NAME-annotator-$ROUND_NAME-list" annotator-round-list "$2" "$3"
    mc admin policy attach "$1" "$NAME-annotator-$ROUND_NAME" "$NAME-annotator-$ROUND_NAME-list" --group "$4"
    ;;
  close-round)
    [[ $# -eq 4 ]] || die "usage: policies.sh close-round ALIAS STORE_URL ROUND GROUP"
    parse_store "$2"
    parse_round "$3"
    mc admin policy detach "$1" "$NAME-annotator-$ROUND_NAME" "$NAME-annotator-$ROUND_NAME-list" --group "$4"
    mc admin policy rm "$1" "$NAME-annotator-$ROUND_NAME"
    mc admin policy rm "$1" "$NAME-annotator-$ROUND_NAME-list"
    ;;
  *)
    die "usage: policies.sh render|install|open-round|close-round ... (see the head of this script)"
    ;;
esac
