//! The runner's bookkeeping without a model backend: run directories, refusals and reports.

use evals::generate::BackendKind;
use evals::run::{report::report, start, RunError, RunOptions, StopRule};

fn setup() -> (tempfile::TempDir, RunOptions) {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model.gguf");
    std::fs::write(&model, b"not really a model").unwrap();
    let task = tmp.path().join("t.jsonl");
    std::fs::write(
        &task,
        "{\"id\": \"a\", \"prompt\": \"1+1=\", \"target\": \"2\"}\n\
         {\"id\": \"b\", \"prompt\": \"Sky?\", \"choices\": [\"blue\", \"red\"], \"answer\": 0}\n\
         {\"id\": \"c\", \"prompt\": \"2+2=\", \"target\": \"4\", \"stop\": [\"\\n\"]}\n",
    )
    .unwrap();
    let mut opts = RunOptions::new(model, task, tmp.path().join("run"));
    opts.backend = BackendKind::Native;
    (tmp, opts)
}

#[test]
fn a_run_directory_pins_its_settings() {
    let (_tmp, opts) = setup();
    // The "model" is not a GGUF file: the run directory is made, then loading fails.
    match start(&opts, &mut |_: &evals::run::Stats| {}) {
        Err(RunError::Backend(e)) => assert!(e.to_string().contains("model.gguf"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(opts.out.join("run.json").is_file());
    // The same settings are accepted again (and fail at the backend again)...
    assert!(matches!(
        start(&opts, &mut |_: &evals::run::Stats| {}),
        Err(RunError::Backend(_))
    ));
    // ...other settings are refused, naming what differs.
    let mut other = opts.clone();
    other.seed = 5;
    other.rule = StopRule::PassUntil {
        r: 1,
        max_samples: 10,
    };
    match start(&other, &mut |_: &evals::run::Stats| {}) {
        Err(RunError::Mismatch { differences, .. }) => {
            let all = differences.join("; ");
            assert!(
                all.contains("seed") && all.contains("stopping rule"),
                "{all}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A changed task file is refused on resume.
    std::fs::write(
        &opts.task,
        "{\"id\": \"z\", \"prompt\": \"x\", \"target\": \"y\"}\n",
    )
    .unwrap();
    match evals::run::resume(
        &opts.out,
        &Default::default(),
        &mut |_: &evals::run::Stats| {},
    ) {
        Err(
            e @ RunError::FileChanged {
                what: "task file", ..
            },
        ) => {
            assert!(e.to_string().contains("has changed"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn reports_count_only_samples_up_to_the_stopping_point() {
    let (_tmp, opts) = setup();
    let _ = start(&opts, &mut |_: &evals::run::Stats| {});
    let line = |p: u64, id: &str, index: u64, passed: bool| {
        serde_json::json!({
            "problem": id, "p": p, "index": index, "passed": passed,
            "verdict": if passed { "pass" } else { "fail" },
            "detail": "", "text": "x", "tokens": [1, 2], "stop": "eog",
            "logprob": -1.0, "sampling_logprob": -1.0,
            "session": 0, "elapsed_s": 2.0, "judge_ms": 0.1
        })
        .to_string()
            + "\n"
    };
    // Problem a: successes at 1 and 3 decide it at K = 4; sample 5 was in flight.
    let mut text = String::new();
    for (i, ok) in [(0, false), (1, true), (2, false), (3, true), (5, true)] {
        text += &line(0, "a", i, ok);
    }
    text += &line(2, "c", 0, false);
    std::fs::write(opts.out.join("samples.jsonl"), &text).unwrap();
    // Problem b is multiple choice: scored, not sampled. Its record, as a run writes it.
    let lls = [-1.0f64, -2.5];
    std::fs::write(
        opts.out.join("choices.jsonl"),
        serde_json::json!({
            "problem": "b", "p": 1, "choices": ["blue", "red"], "scores": [1.0, 0.0],
            "loglikelihoods": lls, "tokens": [1, 1], "greedy": [true, false], "session": 0
        })
        .to_string()
            + "\n",
    )
    .unwrap();
    let r = report(&opts.out).unwrap();
    let c = r.choices.as_ref().expect("the multiple-choice section");
    assert_eq!((c.problems, c.scored), (1, 1));
    assert_eq!(
        (c.acc.value, c.acc_norm.value, c.exact_match.value),
        (1.0, 1.0, 1.0)
    );
    // The same numbers as the metric functions on the same log-likelihoods.
    use evals::metrics::{calibration, continuous};
    let probs = continuous::option_probabilities(&lls);
    assert_eq!(c.brier.value, continuous::brier_score(&lls, 0).unwrap());
    let cal = calibration::calibration(&[probs[0]], &[true], 10).unwrap();
    assert_eq!((c.ece.value, c.mce), (cal.ece, cal.mce));
    assert_eq!(c.lines[0].confidence, probs[0]);
    assert!(r
        .render()
        .contains("multiple choice, 1 of 1 problems scored"));
    let a = &r.problems[0];
    assert_eq!(
        (a.status.as_str(), a.trials, a.successes, a.beyond),
        ("passed", 4, 2, 1)
    );
    assert_eq!(a.pu, 0.5);
    assert_eq!(a.pu_unbiased, Some(1.0 / 3.0));
    assert!(a.ci95.0 < 0.5 && a.ci95.1 > 0.5);
    assert_eq!(r.problems[1].status, "open");
    assert_eq!(r.task.decided, 1);
    // One decided problem: every interval is that problem's value.
    assert_eq!(r.task.pu_mle_ci95, Some((0.5, 0.5)));
    assert_eq!(r.task.pu_unbiased_ci95, Some((1.0 / 3.0, 1.0 / 3.0)));
    assert_eq!(r.throughput.samples, 6);
    assert!(r.render().contains("passed"));

    // A malformed line in the middle is an error naming it.
    text.insert_str(0, "{\"oops\": 1}\n");
    std::fs::write(opts.out.join("samples.jsonl"), &text).unwrap();
    match report(&opts.out) {
        Err(RunError::Malformed { line: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
}
