//! The krew manifest stays installable: its version is the crate's, and each platform
//! names an archive of that version, a sha256 of the right shape and this binary.

use serde_yaml_ng::Value;

#[test]
fn the_krew_manifest_matches_the_crate() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../plugins/krew/regcred.yaml"
    );
    let text = std::fs::read_to_string(path).expect("plugins/krew/regcred.yaml");
    let manifest: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    assert_eq!(
        manifest["apiVersion"].as_str(),
        Some("krew.googlecontainertools.github.com/v1alpha2")
    );
    assert_eq!(manifest["kind"].as_str(), Some("Plugin"));
    assert_eq!(manifest["metadata"]["name"].as_str(), Some("regcred"));
    let spec = &manifest["spec"];
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        spec["version"].as_str(),
        Some(version.as_str()),
        "spec.version"
    );
    for key in ["homepage", "shortDescription", "description"] {
        assert!(spec[key].as_str().is_some_and(|s| !s.is_empty()), "{key}");
    }
    let platforms = spec["platforms"].as_sequence().expect("platforms");
    assert!(platforms.len() >= 2);
    for p in platforms {
        let labels = &p["selector"]["matchLabels"];
        assert!(labels["os"].as_str().is_some() && labels["arch"].as_str().is_some());
        let uri = p["uri"].as_str().expect("uri");
        assert!(
            uri.starts_with("https://") && uri.contains(&format!("/{version}/")),
            "{uri}"
        );
        assert!(uri.ends_with(".tar.gz"), "{uri}");
        let sha = p["sha256"].as_str().expect("sha256");
        assert!(
            sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()),
            "{sha}"
        );
        assert_eq!(p["bin"].as_str(), Some("kubectl-regcred"));
        let files = p["files"].as_sequence().expect("files");
        assert!(
            files
                .iter()
                .any(|f| f["from"].as_str() == Some("kubectl-regcred"))
        );
    }
}
