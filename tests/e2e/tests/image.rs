//! The container image as a release pipeline builds and pushes it: `hack/image.sh --push`
//! to the bed's registry (TLS with its own CA, basic auth), and what the registry then
//! serves: one layer holding exactly the binary, its C runtime and the CA bundle, run as
//! 65532 with `regcred run`.
//!
//! The bed's node tests pull this image and run it under the shipped manifests.

use std::collections::BTreeSet;
use std::process::Command;

use regcred_e2e::root;
use regcred_testkit::TestBed;
use serde_json::Value;

/// `skopeo ARGS` with the bed registry's CA and login (`--creds`/`--cert-dir` for
/// inspect, `--src-creds`/`--src-cert-dir` for copy); stdout, or the failure's stderr.
fn skopeo(bed: &TestBed, args: &[&str]) -> Result<String, String> {
    let registry = bed.registry();
    let prefix = if args[0] == "copy" { "--src-" } else { "--" };
    let out = Command::new("skopeo")
        .args(args)
        .arg(format!("{prefix}creds"))
        .arg(format!("{}:{}", registry.username, registry.password))
        .arg(format!("{prefix}cert-dir"))
        .arg(&registry.ca_dir)
        .output()
        .expect("skopeo runs");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn image_sh_pushes_a_minimal_non_root_image() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let registry = bed.registry();
    let reference = format!("{}/regcred/controller:e2e", registry.host);
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(root().join("hack/image.sh"))
        .args(["--tag", "e2e", "--push", &reference])
        .arg("--layout")
        .arg(work.path().join("oci"))
        .arg("--dest-creds")
        .arg(format!("{}:{}", registry.username, registry.password))
        .arg("--dest-cert-dir")
        .arg(&registry.ca_dir)
        .output()
        .expect("hack/image.sh runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hack/image.sh failed:\n{log}");
    assert!(log.contains("image size: "), "{log}");
    assert!(log.contains("inside the image: regcred "), "{log}");

    let image = format!("docker://{reference}");
    let config: Value =
        serde_json::from_str(&skopeo(bed, &["inspect", "--config", &image]).unwrap()).unwrap();
    let run = &config["config"];
    assert_eq!(run["User"], "65532:65532", "{config}");
    assert_eq!(
        run["Entrypoint"],
        serde_json::json!(["/usr/local/bin/regcred"])
    );
    assert_eq!(run["Cmd"], serde_json::json!(["run"]));
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.title"],
        "regcred"
    );

    // Exactly these files, in one layer: nothing else ships.
    let dir = work.path().join("pulled");
    let copy = format!("dir:{}", dir.display());
    skopeo(bed, &["copy", "--quiet", &image, &copy]).unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    let digest = layers[0]["digest"].as_str().unwrap();
    let blob = dir.join(digest.trim_start_matches("sha256:"));
    let listing = Command::new("tar")
        .arg("-tvzf")
        .arg(&blob)
        .output()
        .expect("tar runs");
    assert!(
        listing.status.success(),
        "the layer is not a whole tar stream: {}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let listing = String::from_utf8(listing.stdout).unwrap();
    let files: BTreeSet<&str> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            let name = l.split_whitespace().nth(5).unwrap();
            name.trim_start_matches("./").trim_start_matches('/')
        })
        .collect();
    let expected: BTreeSet<&str> = [
        "usr/local/bin/regcred",
        "etc/ssl/certs/ca-certificates.crt",
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib/x86_64-linux-gnu/libm.so.6",
        "lib/x86_64-linux-gnu/libgcc_s.so.1",
        "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "lib64/ld-linux-x86-64.so.2",
    ]
    .into();
    assert_eq!(files, expected, "{listing}");

    // As pulled, the image runs from its own files as 65532 (chroot needs root, which
    // the bed's node tests have anyway).
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    let unpacked = Command::new("tar")
        .arg("-xzf")
        .arg(&blob)
        .arg("-C")
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(unpacked.success());
    let root_user = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if root_user {
        let version = Command::new("chroot")
            .arg("--userspec=65532:65532")
            .arg(&rootfs)
            .args(["/usr/local/bin/regcred", "--version"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&version.stdout);
        assert!(version.status.success(), "{version:?}");
        assert!(text.starts_with("regcred 0.1.0 (commit "), "{text}");
    } else {
        eprintln!("not root: the pulled image's binary was not run in a chroot");
    }

    // The push went through the registry's login: without it the image is refused.
    let anonymous = Command::new("skopeo")
        .args(["inspect", "--no-creds", "--cert-dir"])
        .arg(&registry.ca_dir)
        .arg(&image)
        .output()
        .expect("skopeo runs");
    assert!(
        !anonymous.status.success(),
        "the registry serves without a login"
    );
}
