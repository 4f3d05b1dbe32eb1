//! The drift statistics against an independent computation (numpy and
//! scipy, scripts/parity/drift_fixtures.py) on the same bins, to 1e-9.

use streamscore::drift::stats::{Reference, WindowCounts, chi_square, drift};

use crate::support::repo_path;

#[test]
fn drift_statistics_match_scipy_on_the_same_bins() {
    let text = std::fs::read_to_string(repo_path("tests/fixtures/drift/cases.json")).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let counts = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for (i, case) in cases.iter().enumerate() {
        let reference = Reference {
            edges: floats(&case["edges"]),
            shares: floats(&case["reference_shares"]),
            mean: 0.0,
            std: case["reference_std"].as_f64().unwrap(),
            null_rate: 0.0,
        };
        let window = WindowCounts {
            bins: counts(&case["live_counts"]),
            nulls: 0,
            outside: 0,
        };
        let d = drift(&reference, &window).unwrap();
        for (name, ours) in [
            ("psi", d.psi),
            ("ks", d.ks),
            ("jensen_shannon", d.jensen_shannon),
            ("wasserstein", d.wasserstein),
        ] {
            let theirs = case[name].as_f64().unwrap();
            assert!(
                (ours - theirs).abs() <= 1e-9,
                "case {i} {name}: {ours} against {theirs}"
            );
        }
        let chi = chi_square(
            &floats(&case["category_reference"]),
            &counts(&case["category_counts"]),
        );
        let theirs = case["chi_square"].as_f64().unwrap();
        assert!(
            (chi - theirs).abs() <= 1e-9,
            "case {i} chi-square: {chi} against {theirs}"
        );
    }
}
