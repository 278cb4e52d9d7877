//! Records the git commit for `regcred --version`. A release pipeline building outside a
//! git checkout sets `REGCRED_GIT_COMMIT`; with neither, the commit is "unknown" and the
//! build still succeeds.
use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=REGCRED_GIT_COMMIT");
    let commit = match std::env::var("REGCRED_GIT_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_owned(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself, the branch it points at, packed refs.
            // Only existing files: a missing one would rerun this on every build.
            let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
            watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
            for name in watched {
                if let Some(path) = git(&["rev-parse", "--git-path", &name])
                    && Path::new(&path).exists()
                {
                    let path = std::fs::canonicalize(&path).unwrap_or(path.into());
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=REGCRED_GIT_COMMIT={commit}");
}
