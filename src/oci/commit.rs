//! `commit`: a new image made of a stored image and one more layer, with a
//! history entry and the run configuration given, in the base image's
//! manifest format so that `run` and `push` take it like any pulled image.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};

use serde_json::{json, Map, Value};

use super::digest::{Digest, HashingWriter};
use super::manifest;
use super::store::ImageStore;
use super::{OciError, Result};

/// How a box of the new image runs, before `--change`s.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub labels: BTreeMap<String, String>,
}

/// What `commit` is asked for.
#[derive(Debug, Clone, Default)]
pub struct CommitRequest {
    /// The image the box was made from (its ID).
    pub base: String,
    pub run: RunConfig,
    /// Dockerfile instructions (`CMD …`, `ENV K=V`, …) applied on top.
    pub changes: Vec<String>,
    pub message: Option<String>,
    pub author: Option<String>,
    /// The box's command, for the history entry.
    pub created_by: String,
    /// The box's ID.
    pub container: String,
}

fn usage(msg: String) -> OciError {
    OciError::Usage(msg)
}

/// A JSON array (`["a","b"]`) or, else, words run by `/bin/sh -c` when
/// `shell`, or split on white space.
fn words(rest: &str, shell: bool) -> Result<Vec<String>> {
    let t = rest.trim();
    if t.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(t) {
            return Ok(v);
        }
    }
    if shell {
        Ok(vec!["/bin/sh".into(), "-c".into(), t.to_string()])
    } else {
        Ok(t.split_whitespace().map(str::to_string).collect())
    }
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .to_string()
}

/// `K=V K2="V 2"` (or the old `K V` form) as pairs.
fn pairs(rest: &str, what: &str) -> Result<Vec<(String, String)>> {
    let t = rest.trim();
    let first = t.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let (k, v) = t
            .split_once(char::is_whitespace)
            .ok_or_else(|| usage(format!("{what} needs KEY=VALUE: {rest:?}")))?;
        return Ok(vec![(k.to_string(), unquote(v))]);
    }
    // Split on spaces outside double quotes.
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in t.chars().chain(std::iter::once(' ')) {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    let (k, v) = cur
                        .split_once('=')
                        .ok_or_else(|| usage(format!("{what} needs KEY=VALUE: {cur:?}")))?;
                    out.push((k.to_string(), unquote(v)));
                    cur.clear();
                }
            }
            c => cur.push(c),
        }
    }
    Ok(out)
}

/// Applies one `--change` (a Dockerfile instruction) to an image's `config`.
pub fn apply_change(config: &mut Map<String, Value>, change: &str) -> Result<()> {
    let t = change.trim();
    let (word, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
    let set_map = |config: &mut Map<String, Value>, key: &str, k: String, v: Value| {
        let m = config
            .entry(key)
            .or_insert_with(|| Value::Object(Map::new()));
        if !m.is_object() {
            *m = Value::Object(Map::new());
        }
        if let Some(m) = m.as_object_mut() {
            m.insert(k, v);
        }
    };
    match word.to_ascii_uppercase().as_str() {
        "CMD" => {
            config.insert("Cmd".into(), json!(words(rest, true)?));
        }
        "ENTRYPOINT" => {
            config.insert("Entrypoint".into(), json!(words(rest, true)?));
        }
        "ENV" => {
            let mut env: Vec<String> = config
                .get("Env")
                .and_then(|e| serde_json::from_value(e.clone()).ok())
                .unwrap_or_default();
            for (k, v) in pairs(rest, "ENV")? {
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(ek, _)| ek) != k);
                env.push(format!("{k}={v}"));
            }
            config.insert("Env".into(), json!(env));
        }
        "LABEL" => {
            for (k, v) in pairs(rest, "LABEL")? {
                set_map(config, "Labels", k, json!(v));
            }
        }
        "EXPOSE" => {
            for p in rest.split_whitespace() {
                let p = if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                };
                set_map(config, "ExposedPorts", p, json!({}));
            }
        }
        "VOLUME" => {
            for v in words(rest, false)? {
                set_map(config, "Volumes", v, json!({}));
            }
        }
        "USER" => {
            config.insert("User".into(), json!(rest.trim()));
        }
        "WORKDIR" => {
            config.insert("WorkingDir".into(), json!(rest.trim()));
        }
        "STOPSIGNAL" => {
            config.insert("StopSignal".into(), json!(rest.trim()));
        }
        "ONBUILD" => {
            let list = config
                .entry("OnBuild")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(a) = list.as_array_mut() {
                a.push(json!(rest.trim()));
            }
        }
        other => {
            return Err(usage(format!(
                "--change {change:?}: unknown instruction {other}; use CMD, ENTRYPOINT, ENV, \
                 EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME or WORKDIR"
            )))
        }
    }
    Ok(())
}

/// The image's `config` section for `run`, then the changes.
fn run_config(base: Option<&Value>, req: &CommitRequest) -> Result<Value> {
    let mut c = base.and_then(Value::as_object).cloned().unwrap_or_default();
    let r = &req.run;
    let opt_list = |v: &Vec<String>| if v.is_empty() { Value::Null } else { json!(v) };
    c.insert("Entrypoint".into(), opt_list(&r.entrypoint));
    c.insert("Cmd".into(), opt_list(&r.cmd));
    c.insert("Env".into(), json!(r.env));
    c.insert("WorkingDir".into(), json!(r.working_dir));
    c.insert("User".into(), json!(r.user));
    if !r.labels.is_empty() {
        c.insert("Labels".into(), json!(r.labels));
    }
    for ch in &req.changes {
        apply_change(&mut c, ch)?;
    }
    Ok(Value::Object(c))
}

/// The layer's media type in the base manifest's family.
fn layer_media_type(manifest_type: &str) -> &'static str {
    if manifest_type == manifest::DOCKER_MANIFEST {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    }
}

/// Makes the image `req` asks for, its layer written by `write_layer` as an
/// uncompressed tar, and points `tags` (full names) at it. Returns its ID.
pub fn commit(
    store: &ImageStore,
    req: &CommitRequest,
    write_layer: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    tags: &[String],
) -> Result<Digest> {
    let rec = store.resolve(&req.base).map_err(|e| match e {
        OciError::NoSuchImage(_) => OciError::NoSuchImage(format!(
            "{} (the box's image is no longer stored; pull or load it again)",
            req.base
        )),
        e => e,
    })?;
    for c in &req.changes {
        apply_change(&mut Map::new(), c)?;
    }
    // The layer, gzipped into the store's scratch directory.
    let tmp = store.tmp_dir().join(format!(
        "commit-{}-{}",
        std::process::id(),
        Digest::of(req.container.as_bytes()).short()
    ));
    let file = File::create(&tmp).map_err(|e| OciError::io("cannot create", &tmp, e))?;
    let gz = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::default());
    let mut plain = HashingWriter {
        inner: gz,
        hasher: Default::default(),
    };
    let written = write_layer(&mut plain).and_then(|()| {
        plain.flush()?;
        Ok(())
    });
    let finished = written.and_then(|()| {
        let HashingWriter { inner, hasher } = plain;
        let mut f = inner.finish()?.into_inner().map_err(|e| e.into_error())?;
        f.flush()?;
        f.sync_all()?;
        Ok(hasher.finish())
    });
    let diff_id = match finished {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(OciError::io("cannot write the layer", &tmp, e));
        }
    };
    let size = std::fs::metadata(&tmp)
        .map_err(|e| OciError::io("cannot read", &tmp, e))?
        .len();
    let layer = store.put_blob_file(&tmp)?;

    // The config: the base's, with the layer, the history entry and the run
    // configuration.
    let malformed = |what: &str, source| OciError::Malformed {
        what: what.into(),
        source,
    };
    let mut config: Value = serde_json::from_slice(&store.read_blob(&rec.id)?)
        .map_err(|e| malformed("image config", e))?;
    let obj = config
        .as_object_mut()
        .ok_or_else(|| usage("the base image's config is not a JSON object".into()))?;
    let created = crate::runtime::logs::rfc3339(std::time::SystemTime::now());
    let run = run_config(obj.get("config"), req)?;
    obj.insert("config".into(), run);
    obj.insert("created".into(), json!(created));
    obj.insert("container".into(), json!(req.container));
    if let Some(a) = &req.author {
        obj.insert("author".into(), json!(a));
    }
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    match rootfs.get_mut("diff_ids").and_then(Value::as_array_mut) {
        Some(ids) => ids.push(json!(diff_id)),
        None => rootfs["diff_ids"] = json!([diff_id]),
    }
    let mut entry = Map::new();
    entry.insert("created".into(), json!(created));
    entry.insert("created_by".into(), json!(req.created_by));
    if let Some(a) = &req.author {
        entry.insert("author".into(), json!(a));
    }
    if let Some(m) = &req.message {
        entry.insert("comment".into(), json!(m));
    }
    let history = obj
        .entry("history")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(h) = history.as_array_mut() {
        h.push(Value::Object(entry));
    }
    let config_bytes = serde_json::to_vec(&config).expect("JSON values serialise");
    let config_digest = Digest::of(&config_bytes);
    store.put_blob(&config_digest, &config_bytes)?;

    // The manifest: the base's, pointing at the new config and one more layer.
    let mut m: Value = serde_json::from_slice(&store.read_blob(&rec.manifest)?)
        .map_err(|e| malformed("manifest", e))?;
    let media_type = rec.manifest_media_type.clone();
    let config_media = m["config"]["mediaType"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| manifest::OCI_CONFIG.to_string());
    m["mediaType"] = json!(media_type);
    m["config"] = json!({
        "mediaType": config_media, "digest": config_digest, "size": config_bytes.len(),
    });
    let new_layer = json!({
        "mediaType": layer_media_type(&media_type), "digest": layer, "size": size,
    });
    match m.get_mut("layers").and_then(Value::as_array_mut) {
        Some(l) => l.push(new_layer),
        None => m["layers"] = json!([new_layer]),
    }
    let bytes = serde_json::to_vec(&m).expect("JSON values serialise");
    store.add_image(&bytes, tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(changes: &[&str]) -> Map<String, Value> {
        let mut c = Map::new();
        c.insert("Env".into(), json!(["PATH=/bin", "A=1"]));
        for ch in changes {
            apply_change(&mut c, ch).unwrap();
        }
        c
    }

    #[test]
    fn changes_are_dockerfile_instructions() {
        let c = changed(&[
            r#"CMD ["/bin/busybox", "cat", "/etc/x"]"#,
            "ENTRYPOINT echo hi",
            r#"ENV A=2 B="two words""#,
            "ENV OLD form",
            "LABEL tier=web",
            "EXPOSE 80 53/udp",
            "VOLUME /data",
            "user 1000",
            "WORKDIR /srv",
        ]);
        assert_eq!(c["Cmd"], json!(["/bin/busybox", "cat", "/etc/x"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(
            c["Env"],
            json!(["PATH=/bin", "A=2", "B=two words", "OLD=form"])
        );
        assert_eq!(c["Labels"], json!({"tier": "web"}));
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(c["Volumes"], json!({"/data": {}}));
        assert_eq!(
            (c["User"].clone(), c["WorkingDir"].clone()),
            (json!("1000"), json!("/srv"))
        );
    }

    #[test]
    fn an_unknown_instruction_is_refused() {
        let e = apply_change(&mut Map::new(), "RUN make").unwrap_err();
        assert!(e.to_string().contains("unknown instruction RUN"), "{e}");
    }

    #[test]
    fn the_run_configuration_replaces_the_bases_and_keeps_the_rest() {
        let base = json!({"Cmd": ["sh"], "StopSignal": "SIGTERM"});
        let req = CommitRequest {
            run: RunConfig {
                cmd: vec!["sleep".into(), "1".into()],
                env: vec!["A=1".into()],
                working_dir: "/w".into(),
                ..Default::default()
            },
            changes: vec!["ENV B=2".into()],
            ..Default::default()
        };
        let c = run_config(Some(&base), &req).unwrap();
        assert_eq!(c["Cmd"], json!(["sleep", "1"]));
        assert_eq!(c["Entrypoint"], Value::Null);
        assert_eq!(c["Env"], json!(["A=1", "B=2"]));
        assert_eq!(c["StopSignal"], json!("SIGTERM"));
    }
}
