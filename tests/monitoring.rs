#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Monitoring as code: every metric that `config/monitoring/alerts.yml` and
//! `config/monitoring/dashboard.json` name is one the server exports. (The rules' syntax and
//! their unit tests run under `promtool` in `scripts/monitoring`.)

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::TestApp;

/// Series Prometheus records itself for every scrape target, not exported by the server.
const PROMETHEUS_OWN: [&str; 1] = ["up"];

const KEYWORDS: [&str; 11] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
];

/// The metric names a PromQL expression reads: identifiers that are not functions (followed
/// by `(`), keywords, grouping labels, label matchers, strings, ranges or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Set after `by`/`without`/`on`/`ignoring`/`group_*`: the next parenthesis holds labels.
    let mut labels_next = false;
    while i < chars.len() {
        let c = chars[i];
        // Past the string that starts at `from`.
        let skip_string = |from: usize| {
            let mut j = from + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            j + 1
        };
        // Past the bracket that opens at `from` (strings inside may hold brackets).
        let skip_to = |open: char, close: char, from: usize| {
            let mut depth = 0;
            let mut j = from;
            while j < chars.len() {
                if chars[j] == '"' {
                    j = skip_string(j);
                    continue;
                } else if chars[j] == open {
                    depth += 1;
                } else if chars[j] == close {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                j += 1;
            }
            j
        };
        match c {
            '{' => i = skip_to('{', '}', i),
            '[' => i = skip_to('[', ']', i),
            '"' => i = skip_string(i),
            '(' if labels_next => {
                labels_next = false;
                i = skip_to('(', ')', i);
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let rest: String = chars[i..].iter().collect();
                let rest = rest.trim_start();
                // A function call, or an aggregation with its grouping first (`sum by (le) (…)`).
                let call = rest.starts_with('(')
                    || ["by", "without"].iter().any(|g| {
                        rest.strip_prefix(g)
                            .is_some_and(|after| after.trim_start().starts_with('('))
                    });
                if KEYWORDS.contains(&word.as_str()) {
                    labels_next = word != "bool"
                        && !["and", "or", "unless", "offset"].contains(&word.as_str());
                } else if !call {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The `expr` values of a rules file: `expr: <one line>` or `expr: |` and its indented block.
fn rule_expressions(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value == "|" || value == ">" {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .copied()
                .collect();
            exprs.push(block.join("\n"));
        } else {
            exprs.push(value.to_owned());
        }
    }
    exprs
}

fn dashboard_expressions(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    exprs
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Sample names in a text exposition (`name{labels} value` or `name value`).
fn exported(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            l.split(['{', ' '])
                .next()
                .expect("a sample line has a name")
                .to_owned()
        })
        .collect()
}

#[test]
fn the_expression_reader_finds_metrics_and_nothing_else() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (le, route) (rate(http_request_duration_seconds_bucket{job="companion",route!~"/a(b)"}[5m])))
            / clamp_min(sum without (instance) (job_queue_jobs{state="dead"} offset 1h), 1e-9) > bool 0.5
            + max by (instance)(db_pool_connections)
            and on (instance) up == 0 or vector(1)"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "db_pool_connections",
            "http_request_duration_seconds_bucket",
            "job_queue_jobs",
            "up"
        ]
    );
}

#[tokio::test]
async fn every_metric_the_rules_and_dashboard_name_is_exported() {
    let app = TestApp::spawn().await;
    let mut wanted = BTreeSet::new();
    let rules = rule_expressions(&read("config/monitoring/alerts.yml"));
    assert!(rules.len() >= 8, "the rules file has its alerts: {rules:?}");
    let dashboard: Value =
        serde_json::from_str(&read("config/monitoring/dashboard.json")).expect("dashboard JSON");
    let panels = dashboard_expressions(&dashboard);
    assert!(panels.len() >= 10, "the dashboard has its panels");
    for expr in rules.iter().chain(&panels) {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric found in {expr}");
        wanted.extend(names);
    }
    for own in PROMETHEUS_OWN {
        wanted.remove(own);
    }

    // One answered request, so the per-route series exist; an admin reads the stats, which
    // sets the user gauges.
    let admin = app.register("monitoring-admin@example.com").await;
    let admin = app.set_user(&admin, Some("admin"), None).await;
    assert_eq!(
        app.get_auth("/api/v1/admin/stats", &admin.token)
            .await
            .status(),
        200
    );
    let exposition = app.get("/metrics").await.text().await.unwrap();
    let have = exported(&exposition);
    let missing: Vec<_> = wanted.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "named in config/monitoring but not exported: {missing:?}\nexported: {have:?}"
    );
    for needed in [
        "job_queue_jobs",
        "db_pool_connections",
        "virtual_companion_ai_time_to_first_token_seconds_bucket",
        "virtual_companion_websocket_connections",
    ] {
        assert!(wanted.contains(needed), "the monitoring covers {needed}");
    }
}
