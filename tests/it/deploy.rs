//! The deployment files cannot drift from the code: the Grafana dashboard
//! graphs every metric streamscore emits and no metric it does not, and the
//! compose file pins its images. (scripts/test.sh also runs
//! `docker-compose config` on the compose file; no Docker engine runs here.)

use std::collections::BTreeSet;

use streamscore::telemetry::names;

use crate::support::repo_path;

/// Every `streamscore_*` metric a PromQL expression names, without the
/// histogram suffixes.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("streamscore_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        found.push(base.to_owned());
    }
    found
}

#[test]
fn the_dashboard_graphs_every_metric_and_only_real_ones() {
    let text =
        std::fs::read_to_string(repo_path("deploy/grafana/dashboards/streamscore.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut graphed = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            graphed.extend(metrics_in(target["expr"].as_str().unwrap()));
        }
    }
    let emitted: BTreeSet<String> = names::ALL.iter().map(|n| n.to_string()).collect();
    let unknown: Vec<_> = graphed.difference(&emitted).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard graphs unknown metrics {unknown:?}"
    );
    let missing: Vec<_> = emitted.difference(&graphed).collect();
    assert!(
        missing.is_empty(),
        "the dashboard does not graph {missing:?}"
    );
}

#[test]
fn the_compose_file_pins_every_image() {
    let text = std::fs::read_to_string(repo_path("docker-compose.yml")).unwrap();
    let images: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image:"))
        .map(str::trim)
        .collect();
    assert!(images.len() >= 4, "{images:?}");
    for image in images {
        let tag = image.rsplit_once(':').map(|(_, tag)| tag);
        assert!(
            tag.is_some_and(|t| !t.is_empty() && t != "latest"),
            "image `{image}` is not pinned to a version"
        );
    }
}
