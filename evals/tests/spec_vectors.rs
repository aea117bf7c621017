//! The metrics against the test vectors of EVALS-SPEC.md §11, read from the shared spec itself
//! (`../shared/EVALS-SPEC.md` beside the checkout), so the code and the spec cannot drift.

use evals::metrics::pass_at_k::{pass_at_k, pass_at_k_dataset, pass_at_k_variance};
use evals::metrics::passuntil::{emergence, task, Curvature, Instance, ScalingLaw};
use serde_json::Value;

fn spec() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/EVALS-SPEC.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the shared spec must sit beside the checkout: {}: {e}",
            path.display()
        )
    });
    let vectors = text
        .split("## 11. Test vectors")
        .nth(1)
        .expect("section 11");
    let json = vectors
        .split("```json")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a json block in section 11");
    serde_json::from_str(json).expect("the spec's test vectors parse")
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(1e-300) || (got - want).abs() < 1e-15
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

#[test]
fn pass_at_k_vectors() {
    let s = spec();
    for case in s["pass_at_k"].as_array().unwrap() {
        let (n, c, k) = (u(&case["n"]), u(&case["c"]), u(&case["k"]));
        let got = pass_at_k(n, c, k).unwrap();
        assert!(close(got, f(&case["pass_at_k"]), 1e-9), "{case}: {got}");
    }
    let v = &s["pass_at_k_variance_unbiased_DERIVED"];
    let got = pass_at_k_variance(u(&v["n"]), u(&v["c"]), u(&v["k"])).unwrap();
    assert!(close(got, f(&v["Vhat=F^2-G"]), 1e-9), "{got}");
    let d = &s["pass_at_k_dataset"];
    let problems: Vec<(u64, u64)> = d["problems_n_c"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (u(&p[0]), u(&p[1])))
        .collect();
    let r = pass_at_k_dataset(&problems, u(&d["k"])).unwrap();
    for (got, want) in r
        .per_problem
        .iter()
        .zip(d["per_problem"].as_array().unwrap())
    {
        assert!(close(*got, f(want), 1e-9));
    }
    assert!(close(r.mean, f(&d["mean"]), 1e-9));
    assert!(close(
        r.se_across_problems,
        f(&d["se_across_problems_sd_ddof1_over_sqrtP"]),
        1e-9
    ));
    assert!(close(
        r.se_within_sampling.unwrap(),
        f(&d["se_within_sampling_sqrt_sum_Vhat_over_P"]),
        1e-9
    ));
}

#[test]
fn passuntil_vectors() {
    let s = spec();
    for case in s["passuntil_instance"].as_array().unwrap() {
        let (r, k) = (u(&case["r"]), u(&case["K"]));
        let i = Instance {
            successes: r,
            trials: k,
            r,
        };
        assert!(close(i.pu_mle(), f(&case["PU_mle"]), 1e-9));
        match case.get("mvue_(r-1)/(K-1)") {
            Some(want) => assert!(close(i.pu_unbiased().unwrap(), f(want), 1e-9)),
            None => assert_eq!(i.pu_unbiased(), None),
        }
    }
    let c = &s["passuntil_censored_upper95"];
    let i = Instance {
        successes: u(&c["successes"]),
        trials: u(&c["K_max"]),
        r: 2,
    };
    assert!(i.censored());
    assert!(close(i.upper95(), f(&c["exact_1-0.05^(1/K)"]), 1e-9));

    // Task PU is the plain mean of instance PUs; build instances with those rates.
    let t = &s["passuntil_task_mean"];
    let instances: Vec<Instance> = t["instance_PU"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| match f(p) {
            0.0 => Instance {
                successes: 0,
                trials: 100_000,
                r: 1,
            },
            p => Instance {
                successes: 1,
                trials: (1.0 / p).round() as u64,
                r: 1,
            },
        })
        .collect();
    let agg = task(&instances).unwrap();
    assert!(close(agg.pu, f(&t["task_PU"]), 1e-9), "{agg:?}");
    assert_eq!(agg.censored, 1);

    let fit = &s["passuntil_scaling_fit"];
    let n: Vec<f64> = fit["N_billion"].as_array().unwrap().iter().map(f).collect();
    let pu: Vec<f64> = fit["PU"].as_array().unwrap().iter().map(f).collect();
    let law = ScalingLaw::fit(&n, &pu).unwrap();
    assert!(close(law.alpha, f(&fit["fit_alpha"]), 1e-6), "{law:?}");
    assert!(close(law.c, f(&fit["fit_c"]), 1e-6), "{law:?}");
    assert!(close(law.predict(2.4), f(&fit["pred_PU_at_2.4"]), 1e-6));

    let e = &s["passuntil_emergence_curvature"];
    let n: Vec<f64> = e["N_billion(x=ln N)"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect();
    let law_pu: Vec<f64> = n.iter().map(|&x| (-3.0 * x.powf(-0.5)).exp()).collect();
    let lin = emergence(&n, &law_pu, 200, 1).unwrap();
    assert!(lin.q.abs() < 1e-9, "{lin:?}");
    assert_eq!(lin.class, Curvature::Linear);
    for (key, class) in [
        ("multistep", Curvature::Convex),
        ("max_circuits", Curvature::Concave),
    ] {
        let pu: Vec<f64> = e[key]["PU"].as_array().unwrap().iter().map(f).collect();
        let got = emergence(&n, &pu, 2000, 7).unwrap();
        assert!(
            close(got.q, f(&e[key]["quad_coef"]), 1e-6),
            "{key}: {got:?}"
        );
        assert_eq!(got.q > 0.0, class == Curvature::Convex, "{key}");
    }
}
