//! The metrics against the test vectors of EVALS-SPEC.md §11 (a committed copy, checked against
//! the shared spec whenever it sits beside the checkout), so the code and the spec cannot drift.

use evals::metrics::pass_at_k::{pass_at_k, pass_at_k_dataset, pass_at_k_variance};
use evals::metrics::passuntil::{emergence, task, Curvature, Instance, ScalingLaw};
use serde_json::Value;

/// The vector block of EVALS-SPEC.md §11, as committed in `tests/data/` (a copy, so the tests
/// do not depend on where the shared folder sits).
fn spec() -> Value {
    serde_json::from_str(include_str!("data/evals-spec-vectors.json")).expect("the vectors parse")
}

/// The committed copy is the spec's block, whenever the shared spec sits beside the checkout
/// (as it does for developers and CI).
#[test]
fn committed_vectors_match_the_shared_spec() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/EVALS-SPEC.md");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "{} not found: comparing against the committed copy only",
            path.display()
        );
        return;
    };
    let vectors = text
        .split("## 11. Test vectors")
        .nth(1)
        .expect("section 11");
    let json = vectors
        .split("```json")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a json block in section 11");
    let shared: Value = serde_json::from_str(json).expect("the spec's test vectors parse");
    assert_eq!(
        shared,
        spec(),
        "EVALS-SPEC.md changed: refresh tests/data/evals-spec-vectors.json"
    );
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
        let q = evals::metrics::passuntil::curvature(&n, &pu).unwrap();
        assert!(close(q, f(&e[key]["quad_coef"]), 1e-6), "{key}: {q}");
        assert!(
            close(got.q, f(&e[key]["quad_coef"]), 1e-6),
            "{key}: {got:?}"
        );
        assert_eq!(got.q > 0.0, class == Curvature::Convex, "{key}");
    }
}

#[test]
fn continuous_vectors() {
    use evals::metrics::continuous::{
        brier_score, option_probabilities, target_probability, token_edit_distance,
    };
    let s = spec();
    for case in s["token_edit_distance"].as_array().unwrap() {
        let as_strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.to_string())
                .collect()
        };
        let got = token_edit_distance(&as_strings(&case["output"]), &as_strings(&case["target"]));
        assert_eq!(got as u64, u(&case["ted"]), "{case}");
    }
    let t = &s["target_token_prob"];
    let lp: Vec<f64> = t["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect();
    let r = target_probability(&lp).unwrap();
    assert!(close(r.logprob, f(&t["seq_logprob"]), 1e-9));
    assert!(close(r.probability, f(&t["seq_prob"]), 1e-9));
    assert!(close(r.per_token, f(&t["geomean_per_token_prob"]), 1e-9));
    let b = &s["brier_mc"];
    let mut sums = Vec::new();
    for item in b["items"].as_array().unwrap() {
        let lls: Vec<f64> = item["option_lls"]
            .as_array()
            .unwrap()
            .iter()
            .map(f)
            .collect();
        let gold = u(&item["gold"]) as usize;
        for (p, want) in option_probabilities(&lls)
            .iter()
            .zip(item["probs"].as_array().unwrap())
        {
            assert!(close(*p, f(want), 1e-9));
        }
        let brier = brier_score(&lls, gold).unwrap();
        assert!(close(brier, f(&item["brier_sum"]), 1e-9));
        if let Some(k) = item.get("brier_sum_over_K") {
            assert!(close(brier / lls.len() as f64, f(k), 1e-9));
        }
        sums.push(brier);
    }
    let mean = sums.iter().sum::<f64>() / sums.len() as f64;
    assert!(close(mean, f(&b["lm_eval_brier_score_mean_of_sums"]), 1e-9));
}

#[test]
fn llama_perplexity_vectors() {
    use evals::metrics::perplexity::{
        compare_token, median, percentile, perplexity, scored_positions, summarize, EncodedRow,
        TokenComparison,
    };
    let s = spec();
    let c = &s["llama_ppl_chunking"];
    let n_ctx = u(&c["n_ctx"]) as usize;
    assert_eq!(scored_positions(n_ctx).start as u64, u(&c["first"]));
    assert_eq!(
        scored_positions(n_ctx).len() as u64,
        u(&c["scored_per_chunk"])
    );
    let n_chunk = u(&c["n_tokens"]) as usize / n_ctx;
    assert_eq!(n_chunk as u64, u(&c["n_chunk"]));
    assert_eq!(
        (n_chunk * scored_positions(n_ctx).len()) as u64,
        u(&c["scored_total"])
    );

    let p = &s["llama_ppl"];
    let nll: Vec<f64> = p["nll"].as_array().unwrap().iter().map(f).collect();
    let (ppl, unc) = perplexity(&nll).unwrap();
    assert!(close(ppl, f(&p["ppl"]), 1e-9) && close(unc, f(&p["ppl_unc"]), 1e-9));

    let q = &s["llama_percentile_median"];
    let mut v: Vec<f64> = q["values"].as_array().unwrap().iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    assert!(close(percentile(&v, 0.9), f(&q["p0.9"]), 1e-9));
    assert!(close(percentile(&v, 0.999), f(&q["p0.999"]), 1e-9));
    assert!(close(percentile(&v, 0.1), f(&q["p0.1"]), 1e-9));
    assert!(close(median(&v), f(&q["median"]), 1e-9));
    let mut e: Vec<f64> = q["even_values"].as_array().unwrap().iter().map(f).collect();
    e.sort_by(f64::total_cmp);
    assert!(close(median(&e), f(&q["median_even"]), 1e-9));

    // Exact per-token statistics (base log-probs from an f64 log-softmax).
    let k = &s["llama_kld_tokens_exact_f64"];
    let mut toks = Vec::new();
    for t in k["tokens"].as_array().unwrap() {
        let base: Vec<f64> = t["base_logits"].as_array().unwrap().iter().map(f).collect();
        let m = base.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = base.iter().map(|b| (b - m).exp()).sum::<f64>().ln();
        let base_logp: Vec<f64> = base.iter().map(|b| b - m - lse).collect();
        let ql: Vec<f32> = t["q_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| f(x) as f32)
            .collect();
        let r = compare_token(&base_logp, &ql, u(&t["token"]) as usize).unwrap();
        assert!(close(r.kld, f(&t["kld"]), 1e-6), "{r:?}");
        assert!(close(r.delta_p, f(&t["dp"]), 1e-6));
        assert!(close(r.nll_q, f(&t["nll_q"]), 1e-6));
        assert!(close(r.nll_base, f(&t["nll_base"]), 1e-9));
        assert_eq!(r.same_top, t["same_top"].as_bool().unwrap());
        toks.push(r);
    }
    let mean_kld = toks.iter().map(|t| t.kld).sum::<f64>() / 2.0;
    assert!(close(mean_kld, f(&k["mean_kld"]), 1e-6));

    // The uint16 row encoding.
    let r = &s["llama_uint16_base_row"];
    let logits: Vec<f32> = r["logits_f32"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| f(x) as f32)
        .collect();
    let enc = EncodedRow::encode(&logits);
    assert!((enc.scale as f64 - f(&r["scale"])).abs() < 1e-9);
    assert!((enc.min_log_prob as f64 - f(&r["min_log_prob"])).abs() < 1e-6);
    let q: Vec<u64> = enc.q.iter().map(|&x| x as u64).collect();
    assert_eq!(
        q,
        r["q"].as_array().unwrap().iter().map(u).collect::<Vec<_>>()
    );
    for (got, want) in enc
        .decode()
        .iter()
        .zip(r["decoded_logprob"].as_array().unwrap())
    {
        assert!((got - f(want)).abs() < 1e-6, "{got} vs {want}");
    }
    let ql: Vec<f32> = r["q_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| f(x) as f32)
        .collect();
    let cmp = compare_token(&enc.decode(), &ql, u(&r["token"]) as usize).unwrap();
    assert!(
        (cmp.kld - f(&r["kld_with_quantized_base_skip_le_-16"])).abs() < 1e-6,
        "{cmp:?}"
    );

    // The summary block from nll series alone.
    let k = &s["llama_kld_summary_stats"];
    let nq: Vec<f64> = k["nll_q"].as_array().unwrap().iter().map(f).collect();
    let nb: Vec<f64> = k["nll_base"].as_array().unwrap().iter().map(f).collect();
    let same = u(&k["same_top_count"]) as usize;
    let toks: Vec<TokenComparison> = nq
        .iter()
        .zip(&nb)
        .enumerate()
        .map(|(i, (&a, &b))| TokenComparison {
            kld: 0.0,
            delta_p: (-a).exp() - (-b).exp(),
            same_top: i < same,
            nll_q: a,
            nll_base: b,
        })
        .collect();
    let sm = summarize(&toks).unwrap();
    let pairs = [
        (sm.ppl_q.0, "mean_ppl_q"),
        (sm.ppl_q.1, "mean_ppl_q_unc"),
        (sm.ppl_base.0, "mean_ppl_base"),
        (sm.ppl_base.1, "mean_ppl_base_unc"),
        (100.0 * sm.cor, "cor_pct"),
        (sm.ln_ppl_ratio.0, "ln_ppl_ratio"),
        (sm.ln_ppl_ratio.1, "ln_ppl_ratio_unc"),
        (sm.ppl_ratio.0, "ppl_ratio"),
        (sm.ppl_ratio.1, "ppl_ratio_unc"),
        (sm.ppl_diff.0, "ppl_diff"),
        (sm.ppl_diff.1, "ppl_diff_unc"),
        (sm.delta_p.0, "mean_dp"),
        (sm.delta_p.1, "mean_dp_unc"),
        (sm.rms_delta_p.0, "rms_dp"),
        (sm.rms_delta_p.1, "rms_dp_unc"),
        (sm.same_top.0, "same_top_p"),
        (sm.same_top.1, "same_top_unc"),
    ];
    for (got, key) in pairs {
        assert!(close(got, f(&k[key]), 1e-6), "{key}: {got} vs {}", k[key]);
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}

fn bools(v: &Value) -> Vec<bool> {
    v.as_array().unwrap().iter().map(|x| u(x) == 1).collect()
}

#[test]
fn calibration_vectors() {
    use evals::metrics::calibration::{accuracy_se, calibration, predict, wilson};
    use evals::metrics::continuous::option_probabilities;
    let s = spec();
    let e = &s["ece_equal_width"][0];
    let correct = bools(&e["correct"]);
    let c = calibration(&floats(&e["conf"]), &correct, u(&e["M"]) as usize).unwrap();
    assert!(
        close(c.ece, f(&e["ece"]), 1e-9) && close(c.mce, f(&e["mce"]), 1e-9),
        "{c:?}"
    );
    for b in e["bins_used(index,count,acc,conf)"].as_array().unwrap() {
        let (count, conf, acc) = c.bins[u(&b[0]) as usize];
        assert_eq!(count as u64, u(&b[1]));
        assert!(close(acc, f(&b[2]), 1e-9) && close(conf, f(&b[3]), 1e-9));
    }
    let e = &s["ece_equal_width"][1];
    let correct = bools(&e["correct"]);
    let c = calibration(&floats(&e["conf"]), &correct, 10).unwrap();
    assert!(close(c.ece, f(&e["ece_left_closed"]), 1e-9), "{c:?}");

    for item in s["acc_acc_norm"].as_array().unwrap() {
        let choices: Vec<&str> = item["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let p = predict(&floats(&item["lls"]), &choices).unwrap();
        assert_eq!(p.acc as u64, u(&item["pred_acc"]));
        let norm = item
            .get("pred_acc_norm_chars")
            .or(item.get("pred_acc_norm"))
            .unwrap();
        assert_eq!(p.acc_norm as u64, u(norm));
        if let Some(b) = item.get("pred_acc_bytes") {
            assert_eq!(p.acc_bytes as u64, u(b));
        }
    }
    let m = &s["mmlu_letter_softmax"];
    for (p, want) in option_probabilities(&floats(&m["letter_logprobs_ABCD"]))
        .iter()
        .zip(floats(&m["probs"]))
    {
        assert!(close(*p, want, 1e-9));
    }
    for w in s["llama_wilson"].as_array().unwrap() {
        let (lo, hi) = wilson(u(&w["correct"]) as usize, u(&w["n"]) as usize, 1.95996);
        assert!(
            (lo - f(&w["interval"][0])).abs() < 1e-6 && (hi - f(&w["interval"][1])).abs() < 1e-6,
            "{lo} {hi}"
        );
    }
    assert!((accuracy_se(7, 10) - 0.152753).abs() < 1e-6);
}

#[test]
fn consistency_vectors() {
    use evals::metrics::consistency::{
        expected_maj_at_k, majority, rank_score_at_k, small_model_samples, weighted_majority,
    };
    let s = spec();
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    };
    let mv = &s["majority_vote"];
    let answers = strs(&mv["answers"]);
    let refs: Vec<&str> = answers.iter().map(String::as_str).collect();
    assert_eq!(majority(&refs), mv["vote"].as_str());
    let t = &s["maj_first_k_tiebreak_first"];
    let preds = strs(&t["preds"]);
    let refs: Vec<&str> = preds.iter().map(String::as_str).collect();
    assert_eq!(majority(&refs[..2]), t["maj@2"].as_str());
    assert_eq!(majority(&refs[..3]), t["maj@3"].as_str());
    for case in s["maj_at_k_expected_exact_DERIVED"].as_array().unwrap() {
        let answers = strs(&case["answers"]);
        let refs: Vec<&str> = answers.iter().map(String::as_str).collect();
        for (k, want) in case["E_maj_at_k"].as_object().unwrap() {
            let got = expected_maj_at_k(&refs, case["gold"].as_str().unwrap(), k.parse().unwrap())
                .unwrap();
            assert!(close(got, f(want), 1e-9), "k={k}: {got}");
        }
    }
    let w = &s["sc_weighted_vote"];
    let paths: Vec<(String, Vec<f64>)> = w["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_owned(), floats(&p[1])))
        .collect();
    let refs: Vec<(&str, &[f64])> = paths
        .iter()
        .map(|(a, l)| (a.as_str(), l.as_slice()))
        .collect();
    let (winner, sums) = weighted_majority(&refs).unwrap();
    assert_eq!(Some(winner), w["winner"].as_str());
    for (a, s) in sums {
        assert!(close(s, f(&w["weight_sums"][a]), 1e-9));
    }
    for case in s["rank_score_at_k"].as_array().unwrap() {
        let p = bools(&case["pass_sorted"]);
        assert!(close(
            rank_score_at_k(&p, u(&case["k"]) as usize).unwrap(),
            f(&case["score"]),
            1e-9
        ));
    }
    for case in s["budget_realloc"]["cases"].as_array().unwrap() {
        let k = small_model_samples(u(&case["B"]), f(&case["N_large"]), f(&case["N_small"]));
        assert_eq!(k, u(&case["k_small"]));
    }
}

#[test]
fn uncertainty_entropy_outlier_vectors() {
    use evals::metrics::entropy::matrix_entropy;
    use evals::metrics::outliers::outlier_features;
    use evals::metrics::uncertainty::{jaccard_matrix, uncertainty};
    let s = spec();
    for case in s["lin_blackbox_uq_jaccard"].as_array().unwrap() {
        let answers: Vec<&str> = case["answers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let m = answers.len();
        let w = jaccard_matrix(&answers);
        let want_w: Vec<f64> = case["W"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(floats)
            .collect();
        assert!(w.iter().zip(&want_w).all(|(a, b)| (a - b).abs() < 1e-12));
        let r = uncertainty(&w, m, 0.9).unwrap();
        for (got, want) in r.eigenvalues.iter().zip(floats(&case["laplacian_eigs"])) {
            assert!((got - want).abs() < 1e-9, "{:?}", r.eigenvalues);
        }
        assert!((r.eigv - f(&case["U_EigV"])).abs() < 1e-9);
        assert!((r.degree - f(&case["U_Deg_paper"])).abs() < 1e-9);
        assert!((r.degree_uqnlg - f(&case["U_Deg_UQNLG_mean_rowsum_1-W"])).abs() < 1e-9);
        for (got, want) in r.degree_confidence.iter().zip(floats(&case["C_Deg"])) {
            assert!((got - want).abs() < 1e-9);
        }
        assert!((r.eccentricity - f(&case["U_Ecc"])).abs() < 1e-6, "{r:?}");
        for (got, want) in r.eccentricity_norms.iter().zip(floats(&case["C_Ecc"])) {
            assert!((-got - want).abs() < 1e-6, "{r:?}");
        }
    }
    for case in s["matrix_entropy"].as_array().unwrap() {
        let rows: Vec<Vec<f64>> = case["R_NxD"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let (n, d) = (rows.len(), rows[0].len());
        let flat: Vec<f64> = rows.concat();
        let Some(h) = case.get("H_nats") else {
            // A row equal to the mean: skipped, not NaN.
            let r = matrix_entropy(&flat, n, d).unwrap();
            assert!(r.entropy.is_finite());
            continue;
        };
        let r = matrix_entropy(&flat, n, d).unwrap();
        assert!((r.entropy - f(h)).abs() < 1e-9, "{r:?}");
        for (got, want) in r.eigenvalues.iter().zip(floats(&case["eigenvalues"])) {
            assert!((got - want).abs() < 1e-9);
        }
        if let Some(x) = case.get("H_over_ln_d") {
            assert!((r.normalized - f(x)).abs() < 1e-9);
            assert!((r.effective_rank - f(&case["erank"])).abs() < 1e-9);
        }
    }
    // Outliers: the spec's construction.
    let o = &s["outlier_features"];
    let (l, sq, h) = (4usize, 50usize, 8usize);
    let mut states = vec![vec![0.0f32; sq * h]; l];
    for (ly, st) in states.iter_mut().enumerate() {
        for p in 0..sq {
            st[p * h + 7] = 5.99;
            if ly <= 2 && p < 5 {
                st[p * h + 2] = 8.5;
            }
            if ly == 0 && p < 2 {
                st[p * h + 5] = 7.0;
            }
            if (ly == 1 || ly == 3) && (10..=12).contains(&p) {
                st[p * h + 6] = -6.0;
            }
        }
    }
    let r = outlier_features(&states, sq, h, f(&o["threshold"]) as f32);
    assert_eq!(r.dims, [2, 6]);
    assert_eq!(r.dims_pooled, [2]);
    assert!((r.layers_affected - 1.0).abs() < 1e-12);
    assert!((r.positions_affected - 0.16).abs() < 1e-12);
    assert_eq!(r.max_magnitude, 8.5);
}

#[test]
fn remaining_vectors() {
    use evals::metrics::calibration::accuracy_se;
    use evals::metrics::continuous::mirage_model;
    use evals::metrics::pass_at_k::{pass_at_k, pass_at_k_plugin};
    use evals::metrics::passuntil::{expected_inverse_k_r1, predict_from_instances};
    use evals::metrics::perplexity::{strided_windows, token_mean_prediction};
    let s = spec();
    let b = &s["pass_at_k_plugin_biased"];
    let (n, c, k) = (u(&b["n"]), u(&b["c"]), u(&b["k"]));
    assert!(close(
        pass_at_k_plugin(n, c, k).unwrap(),
        f(&b["plugin_1_minus_(1-c/n)^k"]),
        1e-9
    ));
    assert!(close(pass_at_k(n, c, k).unwrap(), f(&b["unbiased"]), 1e-9));
    for case in s["passuntil_r1_bias_E[1/K]"].as_array().unwrap() {
        let p = f(&case["p"]);
        let e = expected_inverse_k_r1(p).unwrap();
        assert!(close(e, f(&case["E_inv_K"]), 1e-9) && close(e / p, f(&case["ratio_to_p"]), 1e-9));
    }
    let ip = &s["passuntil_instance_level_prediction"];
    let laws: Vec<ScalingLaw> = ip["instances_c_alpha"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ca| ScalingLaw {
            c: f(&ca[0]),
            alpha: f(&ca[1]),
            points: 0,
        })
        .collect();
    for (law, want) in laws.iter().zip(floats(&ip["instance_PU"])) {
        assert!(close(law.predict(f(&ip["N"])), want, 1e-9));
    }
    assert!(close(
        predict_from_instances(&laws, f(&ip["N"])).unwrap(),
        f(&ip["task_PU_mean"]),
        1e-9
    ));
    for case in s["mirage_model"].as_array().unwrap() {
        let (acc, ted) = mirage_model(f(&case["p"]), u(&case["L"]) as u32);
        assert!(close(acc, f(&case["acc_p^L"]), 1e-9) && close(ted, f(&case["ted_L(1-p)"]), 1e-9));
    }
    let st = &s["llama_strided"];
    let (windows, scored) = strided_windows(
        u(&st["n_tokens"]) as usize,
        u(&st["n_ctx_after_adjust"]) as usize,
        u(&st["stride"]) as usize,
    );
    assert_eq!(windows as u64, u(&st["n_chunk_max"]));
    assert_eq!(scored.len() as u64, u(&st["scored_per_window"]));
    let hs = &s["llama_hellaswag_token_mean"];
    let endings: Vec<Vec<f64>> = hs["ending_token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let refs: Vec<&[f64]> = endings.iter().map(Vec::as_slice).collect();
    let (means, pred) = token_mean_prediction(&refs);
    for (m, want) in means.iter().zip(floats(&hs["means"])) {
        assert!(close(*m, want, 1e-9));
    }
    assert_eq!(pred as u64, u(&hs["pred"]));
    let bs = &s["binary_se"];
    let scores: Vec<u64> = bs["scores"].as_array().unwrap().iter().map(u).collect();
    let correct = scores.iter().filter(|&&x| x == 1).count();
    assert!(close(
        correct as f64 / scores.len() as f64,
        f(&bs["mean"]),
        1e-12
    ));
    assert!(close(
        accuracy_se(correct, scores.len()),
        f(&bs["se"]),
        1e-9
    ));
}

/// Every key of the spec's vector block is exercised by a test in this file.
#[test]
fn every_vector_is_covered() {
    let s = spec();
    let this = include_str!("spec_vectors.rs");
    for key in s.as_object().unwrap().keys() {
        assert!(this.contains(&format!("\"{key}\"")), "no test reads {key}");
    }
}
