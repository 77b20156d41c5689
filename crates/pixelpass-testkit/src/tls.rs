//! A throw-away certificate authority for the HTTPS tests: a CA and a server
//! certificate for one IP address, made with the `openssl` command (P-256,
//! valid two days), in a test's temporary directory.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::tools::{run_tool, TempDir};

pub struct TestCa {
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The CA's own key (a key that does not match `cert`).
    pub ca_key: PathBuf,
    /// The server certificate (for `ip`), signed by the CA.
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &TempDir, args: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(&dir.0);
    let out = run_tool(cmd, Duration::from_secs(30));
    assert!(
        out.success(),
        "openssl {args:?} failed (apt-get install openssl): {}",
        out.stderr
    );
}

impl TestCa {
    pub fn make(dir: &TempDir, ip: &str) -> TestCa {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=pixelpass test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &ca);
        let mut req = vec!["req"];
        req.extend(ec);
        let subj = format!("/CN={ip}");
        req.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            &subj,
        ]);
        openssl(dir, &req);
        dir.write(
            "server.ext",
            format!(
                "subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
            )
            .as_bytes(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        TestCa {
            ca: dir.0.join("ca.pem"),
            ca_key: dir.0.join("ca.key"),
            cert: dir.0.join("server.pem"),
            key: dir.0.join("server.key"),
        }
    }
}
