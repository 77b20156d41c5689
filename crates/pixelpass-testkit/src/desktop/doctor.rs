//! `pixelpass doctor --json` with a given environment, and its rows.

use std::process::Command;
use std::time::Duration;

use crate::prelude::{run_tool, ToolOutput};

pub fn doctor(env: &[(String, String)]) -> (ToolOutput, serde_json::Value) {
    let mut cmd = Command::new(crate::bin::pixelpass());
    cmd.args(["doctor", "--json"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)));
    let out = run_tool(cmd, Duration::from_secs(60));
    let json = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json ({e}): {out:?}"));
    (out, json)
}

pub fn doctor_row<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no {id} row in {report:#}"))
}
