//! The benchmarks are their own binary: `pixelpass` has no `bench`, and
//! `pixelpass-bench --json` prints one JSON object per step, the table's
//! figures, with the prose on stderr.

use std::process::Command;

fn help(bin: &std::path::Path) -> String {
    let out = Command::new(bin)
        .arg("--help")
        .output()
        .expect("runs --help");
    assert!(
        out.status.success(),
        "{} --help: {}",
        bin.display(),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn the_product_binary_has_no_benchmarks_and_the_bench_binary_has_them_all() {
    let product = subcommands(&help(&pixelpass_testkit::bin::pixelpass()));
    assert_eq!(product, ["host", "serve", "view", "doctor", "completions"]);
    let bench = subcommands(&help(std::path::Path::new(env!(
        "CARGO_BIN_EXE_pixelpass-bench"
    ))));
    assert_eq!(
        bench,
        [
            "fanout",
            "latency",
            "hls-cache",
            "hls-segment",
            "join",
            "capture",
            "whep-fanout",
            "serve",
            "adapt",
            "soak",
            "faults"
        ]
    );
}

#[test]
fn fanout_json_prints_one_object_per_step_with_the_tables_figures() {
    let out = Command::new("timeout")
        .args(["-k", "5", "120"])
        .arg(env!("CARGO_BIN_EXE_pixelpass-bench"))
        .args(["fanout", "--json", "--synthetic", "--viewers", "1,3"])
        .args(["--seconds", "1", "--warmup", "0.5"])
        .env("PIXELPASS_LOG", "warn")
        .output()
        .expect("runs pixelpass-bench fanout");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    let steps: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(steps.len(), 2, "one object per step: {stdout}");
    for (step, viewers) in steps.iter().zip([1, 3]) {
        assert_eq!(step["bench"], "fanout");
        assert_eq!(step["viewers"], viewers);
        assert_eq!(step["connected"], viewers, "{step}");
        assert!(step["gbps"].as_f64().is_some_and(|g| g > 0.0), "{step}");
        assert!(
            step["cpu_per_s"].is_number() && step["stalls"].is_number(),
            "{step}"
        );
    }
    assert!(
        stderr.contains("core/Gbit/s"),
        "the table goes to stderr: {stderr}"
    );
}
