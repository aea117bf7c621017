//! Fuzz the three task parsers: arbitrary text gives a problem list or an error naming the
//! file, never a panic; whatever parses has unique ids.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parse in [
        evals::tasks::parse_jsonl,
        evals::tasks::parse_bigbench,
        evals::tasks::parse_humaneval,
    ] {
        match parse("fuzz.input", text) {
            Ok(problems) => {
                let ids: std::collections::HashSet<&str> = problems.iter().map(|p| p.id.as_str()).collect();
                assert_eq!(ids.len(), problems.len());
            }
            Err(e) => assert!(e.to_string().contains("fuzz.input")),
        }
    }
});
