//! `volume ls --filter` and `volume prune --filter`, as Docker reads them:
//! `dangling=true|false`, `label=KEY[=VALUE]`, `label!=KEY[=VALUE]`,
//! `name=SUBSTRING`, `driver=local`. Values of one key are alternatives;
//! different keys must all hold.

use std::collections::BTreeMap;

use super::{Volume, VolumeError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

/// The keys `ls` takes; `prune` takes `label` and `label!` only (`all` is its `-a`).
const LS_KEYS: &[&str] = &["dangling", "label", "label!", "name", "driver"];
const PRUNE_KEYS: &[&str] = &["label", "label!"];

impl Filters {
    fn parse_with(specs: &[String], keys: &[&str]) -> Result<Filters, VolumeError> {
        let mut f = BTreeMap::<String, Vec<String>>::new();
        for s in specs {
            let (k, v) = match s.split_once("!=") {
                Some(("label", v)) => ("label!", v),
                _ => s.split_once('=').ok_or_else(|| {
                    VolumeError::Filter(format!("bad format of filter (expected name=value): {s}"))
                })?,
            };
            let k = k.to_ascii_lowercase();
            if !keys.contains(&k.as_str()) {
                return Err(VolumeError::Filter(format!("invalid filter '{k}'")));
            }
            if k == "dangling" && !matches!(v, "true" | "false" | "1" | "0") {
                return Err(VolumeError::Filter(format!(
                    "invalid filter 'dangling={v}'"
                )));
            }
            f.entry(k).or_default().push(v.to_string());
        }
        Ok(Filters(f))
    }

    /// `volume ls --filter` flags.
    pub fn parse_ls(specs: &[String]) -> Result<Filters, VolumeError> {
        Self::parse_with(specs, LS_KEYS)
    }

    /// `volume prune --filter` flags.
    pub fn parse_prune(specs: &[String]) -> Result<Filters, VolumeError> {
        Self::parse_with(specs, PRUNE_KEYS)
    }

    /// Whether volume `v`, which `in_use` says whether a box uses, passes.
    pub fn matches(&self, v: &Volume, in_use: bool) -> bool {
        let label = |spec: &str| match spec.split_once('=') {
            Some((k, want)) => v.labels.get(k).is_some_and(|have| have == want),
            None => v.labels.contains_key(spec),
        };
        self.0.iter().all(|(k, values)| match k.as_str() {
            "dangling" => values
                .iter()
                .any(|d| matches!(d.as_str(), "true" | "1") != in_use),
            // Every label must be there, as Docker's label filters go.
            "label" => values.iter().all(|l| label(l)),
            "label!" => !values.iter().any(|l| label(l)),
            "name" => values.iter().any(|n| v.name.contains(n.as_str())),
            "driver" => values.iter().any(|d| d == "local"),
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(name: &str, labels: &[(&str, &str)]) -> Volume {
        Volume {
            name: name.into(),
            created: 0,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            options: BTreeMap::new(),
        }
    }

    fn f(specs: &[&str]) -> Filters {
        Filters::parse_ls(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn dangling_means_no_box_uses_it() {
        let v = vol("data", &[]);
        assert!(f(&["dangling=true"]).matches(&v, false));
        assert!(!f(&["dangling=true"]).matches(&v, true));
        assert!(f(&["dangling=false"]).matches(&v, true));
        assert!(!f(&["dangling=false"]).matches(&v, false));
        assert!(f(&[]).matches(&v, true));
    }

    #[test]
    fn labels_names_and_drivers_filter_as_dockers() {
        let v = vol("web-data", &[("env", "prod"), ("team", "")]);
        assert!(f(&["label=env"]).matches(&v, false));
        assert!(f(&["label=env=prod"]).matches(&v, false));
        assert!(!f(&["label=env=dev"]).matches(&v, false));
        assert!(!f(&["label=env", "label=owner"]).matches(&v, false));
        assert!(f(&["label!=owner"]).matches(&v, false));
        assert!(!f(&["label!=env=prod"]).matches(&v, false));
        assert!(f(&["name=data"]).matches(&v, false));
        assert!(f(&["name=nope", "name=web"]).matches(&v, false));
        assert!(!f(&["name=db"]).matches(&v, false));
        assert!(!f(&["name=web", "dangling=false"]).matches(&v, false));
        assert!(f(&["driver=local"]).matches(&v, false));
    }

    #[test]
    fn unknown_filters_are_refused() {
        let e = |s: &str| Filters::parse_ls(&[s.to_string()]).unwrap_err().to_string();
        assert_eq!(e("color=red"), "invalid filter 'color'");
        assert_eq!(e("dangling=maybe"), "invalid filter 'dangling=maybe'");
        assert!(e("dangling").contains("expected name=value"));
        assert!(Filters::parse_prune(&["dangling=true".into()]).is_err());
        assert!(Filters::parse_prune(&["label=a".into()]).is_ok());
    }
}
