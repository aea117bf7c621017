#!/usr/bin/env bash
# The README's Kubernetes recipe (deploy/kubernetes/pass-until-job.yaml), checked statically: no
# cluster runs it here. It must validate against the batch/v1 Job schema of the Kubernetes
# versions below in strict mode (unknown or misspelt fields fail), its shard count must match
# `completions`, and the README must show the file as it is. The schemas come with the
# kubernetes-validate package (pinned), installed once into $PASSUNTIL_CACHE.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
job=$repo/deploy/kubernetes/pass-until-job.yaml
cache=${PASSUNTIL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/passuntil}
venv=$cache/python/kubernetes-validate-1.37.0
if [[ ! -x $venv/bin/kubernetes-validate ]]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi

for version in 1.33.0 1.37.0; do
    "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$version" "$job"
done

# The schema check must be able to fail: a misspelt field and a wrong type are rejected.
bad=$(mktemp)
trap 'rm -f "$bad"' EXIT
for edit in 's/completionMode:/completionMod:/' 's/completions: 16/completions: "16x"/'; do
    sed "$edit" "$job" >"$bad"
    if "$venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version 1.37.0 "$bad" >/dev/null 2>&1; then
        echo "kubernetes-validate accepted a broken Job ($edit)" >&2
        exit 1
    fi
done

"$venv/bin/python" - "$job" "$repo/README.md" <<'PY'
import re, sys, yaml
path, readme = sys.argv[1:]
text = open(path).read()
job = yaml.safe_load(text)
spec = job["spec"]
command = " ".join(spec["template"]["spec"]["containers"][0]["command"])
shards = re.search(r"--shard \$JOB_COMPLETION_INDEX/(\d+)", command)
assert spec["completionMode"] == "Indexed", "shards need an Indexed Job"
assert shards and int(shards.group(1)) == spec["completions"], (
    f"--shard .../{shards and shards.group(1)} but completions: {spec['completions']}")
assert re.search(r"--out /runs/\S*\$JOB_COMPLETION_INDEX", command), "one directory per shard"
if "backoffLimitPerIndex" in spec:
    assert spec["template"]["spec"]["restartPolicy"] == "Never", (
        "backoffLimitPerIndex needs restartPolicy: Never")
blocks = re.findall(r"```yaml\n(.*?)```", open(readme).read(), re.S)
assert text in blocks, "README's Kubernetes recipe differs from deploy/kubernetes/pass-until-job.yaml"
print(f"{path}: valid Job, {spec['completions']} shards, as in the README")
PY
