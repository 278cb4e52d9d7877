//! Which pull credentials kubelet uses for an image, by the rules of its credential
//! provider keyring (`pkg/credentialprovider/keyring.go`), so that regcred's tools answer
//! "does this Secret cover that image?" exactly as a node would.
//!
//! A `.dockerconfigjson` key (a *server*) is indexed with its scheme stripped, an `/v1/` or
//! `/v2/` path prefix dropped and a bare `/` path ignored. It is then used for an image
//! when, with the image normalized to its repository (`nginx` is
//! `docker.io/library/nginx`; tag and digest dropped):
//! - the ports are equal (no port matches only no port);
//! - the hosts have the same number of dot-separated labels, and each label of the server
//!   matches the image's as a glob (`*`, `[a-z]`: `*.example.com` matches
//!   `registry.example.com`, not `example.com` nor `a.b.example.com`; a `?` starts a
//!   URL query, so kubelet drops it and what follows);
//! - the server's path is a prefix of the repository's path (as a string:
//!   `host/team` also covers `host/teams/app`).
//!
//! A credential for the default registry (`https://index.docker.io/v1/` or
//! `index.docker.io`) also covers every Docker Hub image.

/// The host kubelet files Docker Hub credentials under.
const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

/// The repository kubelet looks credentials up for: `image` normalized as the container
/// runtime does (`docker.io` when the first component is not a host, `library/` for an
/// official image, `index.docker.io` read as `docker.io`), without tag or digest. `None`
/// for an empty reference.
///
/// ```
/// use regcred_providers::keyring::repository;
/// assert_eq!(repository("nginx:1.27").as_deref(), Some("docker.io/library/nginx"));
/// assert_eq!(
///     repository("registry.example.com:5000/team/app@sha256:abc").as_deref(),
///     Some("registry.example.com:5000/team/app")
/// );
/// ```
pub fn repository(image: &str) -> Option<String> {
    let image = image.trim();
    // The digest first: a tag may stand before it (`app:1@sha256:...`).
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    if image.is_empty() {
        return None;
    }
    let (domain, remainder) = match image.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => ("docker.io", image),
    };
    // A tag is a ':' after the last '/' (a port is before the first one).
    let remainder = match remainder.rfind(':') {
        Some(i) if !remainder[i..].contains('/') => &remainder[..i],
        _ => remainder,
    };
    if remainder.is_empty() {
        return None;
    }
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    if domain == "docker.io" && !remainder.contains('/') {
        return Some(format!("docker.io/library/{remainder}"));
    }
    Some(format!("{domain}/{remainder}"))
}

/// The key kubelet indexes a `.dockerconfigjson` server under: scheme stripped (`http://`
/// or `https://`), a `/v1/` or `/v2/` path prefix dropped, a bare `/` path ignored, query
/// and fragment dropped.
///
/// ```
/// use regcred_providers::keyring::server_key;
/// assert_eq!(server_key("https://index.docker.io/v1/"), "index.docker.io");
/// assert_eq!(server_key("registry.example.com:5000/team"), "registry.example.com:5000/team");
/// ```
pub fn server_key(server: &str) -> String {
    let (host, path) = split(strip_scheme(server));
    let path = if path.starts_with("/v2/") || path.starts_with("/v1/") {
        &path[3..]
    } else {
        path
    };
    if path.is_empty() || path == "/" {
        host.to_owned()
    } else {
        format!("{host}{path}")
    }
}

/// Whether kubelet uses a credential filed under `server` (a `.dockerconfigjson` key) for
/// an image of `repository` (as [`repository`] returns it). The default-registry rule is
/// [`Keyring::covers`]'s, not this function's.
pub fn matches(server: &str, repository: &str) -> bool {
    url_match(&server_key(server), repository)
}

/// `URLsMatchStr(glob, target)`: both schemeless.
fn url_match(glob: &str, target: &str) -> bool {
    let (glob_host, glob_path) = split(glob);
    let (target_host, target_path) = split(target);
    let (glob_labels, glob_port) = split_host_port(glob_host);
    let (target_labels, target_port) = split_host_port(target_host);
    if glob_port != target_port || glob_labels.len() != target_labels.len() {
        return false;
    }
    if !target_path.starts_with(glob_path) {
        return false;
    }
    glob_labels
        .iter()
        .zip(&target_labels)
        .all(|(glob, label)| glob_match(glob, label) == Some(true))
}

fn strip_scheme(server: &str) -> &str {
    server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server)
}

/// A schemeless URL's host (with port; user info dropped) and path (query and fragment
/// dropped), as Go's `url.Parse("https://" + s)` splits them.
fn split(url: &str) -> (&str, &str) {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match url.find('/') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (host, path)
}

/// `net.SplitHostPort`, falling back to the whole host and no port when it fails (no
/// port, or more colons than one outside brackets); the host split into its labels.
fn split_host_port(host: &str) -> (Vec<&str>, &str) {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((name, port)) if !port.contains(':') => (name, port),
            _ => (host, ""),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) if !port.contains(':') => (name, port),
            _ => (host, ""),
        }
    };
    (name.split('.').collect(), port)
}

/// Go's `filepath.Match` on one host label (which holds no `/`): `*`, `?`, `[...]` with
/// ranges and `^` negation, `\` escapes. `None` for a malformed pattern, which kubelet
/// treats as no match.
fn glob_match(pattern: &str, name: &str) -> Option<bool> {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let ok = matches_from(&pattern, &name)?;
    // A malformed class after a `*` that matched early must still be an error.
    validate(&pattern)?;
    Some(ok)
}

fn matches_from(pattern: &[char], name: &[char]) -> Option<bool> {
    match pattern.first() {
        None => Some(name.is_empty()),
        Some('*') => {
            for skip in 0..=name.len() {
                if matches_from(&pattern[1..], &name[skip..])? {
                    return Some(true);
                }
            }
            Some(false)
        }
        Some(_) => {
            let Some(c) = name.first() else {
                return Some(false);
            };
            let (ok, used) = single(pattern, *c)?;
            if !ok {
                return Some(false);
            }
            matches_from(&pattern[used..], &name[1..])
        }
    }
}

/// Whether the pattern element at the start of `pattern` (not `*`) matches `c`, and how
/// many pattern characters it took.
fn single(pattern: &[char], c: char) -> Option<(bool, usize)> {
    match pattern[0] {
        '?' => Some((true, 1)),
        '\\' => {
            let escaped = *pattern.get(1)?;
            Some((escaped == c, 2))
        }
        '[' => {
            let mut i = 1;
            let negated = pattern.get(i) == Some(&'^');
            if negated {
                i += 1;
            }
            let mut matched = false;
            let mut first = true;
            loop {
                let item = *pattern.get(i)?;
                if item == ']' && !first {
                    i += 1;
                    break;
                }
                first = false;
                let (low, next) = class_char(pattern, i)?;
                i = next;
                let high = if pattern.get(i) == Some(&'-') {
                    let (high, next) = class_char(pattern, i + 1)?;
                    i = next;
                    high
                } else {
                    low
                };
                if low <= c && c <= high {
                    matched = true;
                }
            }
            Some((matched != negated, i))
        }
        other => Some((other == c, 1)),
    }
}

/// One character of a class, possibly escaped; `-` and `]` may not stand unescaped.
fn class_char(pattern: &[char], i: usize) -> Option<(char, usize)> {
    match *pattern.get(i)? {
        '\\' => Some((*pattern.get(i + 1)?, i + 2)),
        '-' | ']' => None,
        c => Some((c, i + 1)),
    }
}

fn validate(pattern: &[char]) -> Option<()> {
    let mut i = 0;
    while i < pattern.len() {
        if pattern[i] == '*' {
            i += 1;
        } else {
            // Any character works to find the element's length.
            let (_, used) = single(&pattern[i..], '\0')?;
            i += used;
        }
    }
    Some(())
}

/// The servers of one or more pull Secrets, as kubelet would look them up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<String>,
}

impl Keyring {
    /// A keyring of these `.dockerconfigjson` servers.
    pub fn new<I, S>(servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut keyring = Keyring::default();
        keyring.extend(servers);
        keyring
    }

    /// Adds servers (another Secret's).
    pub fn extend<I, S>(&mut self, servers: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.keys
            .extend(servers.into_iter().map(|s| server_key(s.as_ref())));
        // kubelet tries the more specific keys first; the order does not change whether
        // one matches, but it makes `matching` list them as kubelet would try them.
        self.keys.sort_unstable_by(|a, b| b.cmp(a));
        self.keys.dedup();
    }

    /// Whether no server is in the keyring.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that kubelet would use for `repository`, most specific first.
    pub fn matching(&self, repository: &str) -> Vec<&str> {
        let found: Vec<&str> = self
            .keys
            .iter()
            .filter(|k| url_match(k, repository))
            .map(String::as_str)
            .collect();
        if found.is_empty() && is_default_registry(repository) {
            return self
                .keys
                .iter()
                .filter(|k| *k == DEFAULT_REGISTRY_HOST)
                .map(String::as_str)
                .collect();
        }
        found
    }

    /// Whether kubelet would find a credential here for an image of `repository`.
    pub fn covers(&self, repository: &str) -> bool {
        !self.matching(repository).is_empty()
    }
}

/// `isDefaultRegistryMatch`: an image of Docker Hub.
fn is_default_registry(image: &str) -> bool {
    let mut parts = image.splitn(2, '/');
    let first = parts.next().unwrap_or_default();
    if first.is_empty() {
        return false;
    }
    match parts.next() {
        None => true,
        Some(_) => {
            first == "docker.io" || first == "index.docker.io" || !first.contains(['.', ':'])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(servers: &[&str], image: &str) -> bool {
        Keyring::new(servers).covers(&repository(image).unwrap())
    }

    #[test]
    fn images_normalize_as_the_runtime_does() {
        for (image, want) in [
            ("nginx", "docker.io/library/nginx"),
            ("nginx:1.27", "docker.io/library/nginx"),
            ("library/nginx", "docker.io/library/nginx"),
            ("bitnami/redis:7", "docker.io/bitnami/redis"),
            ("index.docker.io/bitnami/redis", "docker.io/bitnami/redis"),
            ("docker.io/nginx", "docker.io/library/nginx"),
            ("localhost/app", "localhost/app"),
            ("localhost:5000/app:1", "localhost:5000/app"),
            (
                "127.0.0.1:5000/regcred/hello:1",
                "127.0.0.1:5000/regcred/hello",
            ),
            ("quay.io/coreos/etcd@sha256:0123", "quay.io/coreos/etcd"),
            ("quay.io/coreos/etcd:v3@sha256:0123", "quay.io/coreos/etcd"),
            (
                "registry.example.com/team/app",
                "registry.example.com/team/app",
            ),
        ] {
            assert_eq!(repository(image).as_deref(), Some(want), "{image}");
        }
        assert_eq!(repository(""), None);
        assert_eq!(repository("@sha256:0123"), None);
    }

    #[test]
    fn keys_drop_the_scheme_and_docker_api_paths() {
        assert_eq!(server_key("https://index.docker.io/v1/"), "index.docker.io");
        assert_eq!(
            server_key("http://registry.example.com/"),
            "registry.example.com"
        );
        assert_eq!(
            server_key("https://registry.example.com/v2/team"),
            "registry.example.com/team"
        );
        assert_eq!(
            server_key("registry.example.com:5000"),
            "registry.example.com:5000"
        );
        assert_eq!(
            server_key("registry.example.com/team/"),
            "registry.example.com/team/"
        );
    }

    #[test]
    fn hosts_match_exactly_or_by_label_globs() {
        let r = "registry.example.com";
        assert!(covers(&[r], "registry.example.com/app:1"));
        assert!(covers(
            &[&format!("https://{r}")],
            "registry.example.com/app"
        ));
        assert!(!covers(&[r], "other.example.com/app"));
        assert!(!covers(&[r], "example.com/app"));
        assert!(covers(&["*.example.com"], "registry.example.com/app"));
        assert!(!covers(&["*.example.com"], "example.com/app"));
        assert!(!covers(&["*.example.com"], "a.registry.example.com/app"));
        assert!(covers(&["*.*.example.com"], "a.registry.example.com/app"));
        // As in a URL, `?` starts a query: kubelet never sees it as a glob in a host.
        assert!(!covers(
            &["registry-?.example.com"],
            "registry-1.example.com/app"
        ));
        assert!(covers(
            &["registry-[0-9].example.com"],
            "registry-7.example.com/a"
        ));
        assert!(!covers(
            &["registry-[^0-9].example.com"],
            "registry-7.example.com/a"
        ));
        assert!(covers(
            &["*.dkr.ecr.*.amazonaws.com"],
            "1234.dkr.ecr.eu-west-1.amazonaws.com/app"
        ));
        // A malformed glob matches nothing.
        assert!(!covers(
            &["registry-[.example.com"],
            "registry-[.example.com/a"
        ));
    }

    #[test]
    fn ports_must_be_equal() {
        assert!(covers(
            &["registry.example.com:5000"],
            "registry.example.com:5000/a"
        ));
        assert!(!covers(
            &["registry.example.com"],
            "registry.example.com:5000/a"
        ));
        assert!(!covers(
            &["registry.example.com:5000"],
            "registry.example.com/a"
        ));
        assert!(!covers(
            &["registry.example.com:5000"],
            "registry.example.com:5001/a"
        ));
        assert!(covers(
            &["127.0.0.1:35489"],
            "127.0.0.1:35489/regcred/hello:1"
        ));
        assert!(covers(&["[::1]:5000"], "[::1]:5000/app"));
    }

    #[test]
    fn paths_are_string_prefixes() {
        let team = "registry.example.com/team";
        assert!(covers(&[team], "registry.example.com/team/app"));
        assert!(covers(&[team], "registry.example.com/teams/app"));
        assert!(!covers(&[team], "registry.example.com/other/app"));
        assert!(!covers(
            &["registry.example.com/team/"],
            "registry.example.com/teams/app"
        ));
        assert_eq!(
            Keyring::new([team, "registry.example.com"]).matching("registry.example.com/team/a"),
            [team, "registry.example.com"]
        );
    }

    #[test]
    fn docker_hub_credentials_cover_docker_hub_images() {
        let hub = "https://index.docker.io/v1/";
        assert!(covers(&[hub], "nginx"));
        assert!(covers(&[hub], "bitnami/redis"));
        assert!(covers(&["docker.io"], "bitnami/redis"));
        assert!(!covers(&[hub], "quay.io/coreos/etcd"));
        assert!(!covers(&["registry.example.com"], "nginx"));
        assert!(!Keyring::default().covers("docker.io/library/nginx"));
    }

    #[test]
    fn matches_names_one_server() {
        assert!(matches(
            "https://registry.example.com/v2/",
            "registry.example.com/a"
        ));
        assert!(!matches("registry.example.com", "registry.example.org/a"));
    }
}
