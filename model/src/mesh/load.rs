//! Loading mesh configuration from YAML and JSON.
//!
//! Accepts multi-document YAML, JSON (a YAML subset), `kind: List` (and `*List`) wrappers, and
//! directories searched recursively for `.yaml`, `.yml` and `.json`. Loading never stops at the first
//! problem: a malformed document becomes a [`LoadError`] naming file, line, document index, resource and
//! field path, and the remaining documents still load. Documents of kinds meshlens does not model become
//! [`SkippedDocument`]s. This and reading the files it is pointed at is the only I/O in the model crate.

use super::{Kind, Resource, decode, resource_ref};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use yaml_serde::Value;

/// Where a document came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: String,
    /// 1-based index of the document within the file.
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} (document {})", self.file, self.line, self.document)
    }
}

/// A typed resource and where it was loaded from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadedResource {
    pub origin: Origin,
    pub resource: Resource,
}

/// A well-formed document of a kind meshlens does not model (e.g. `ServiceAccount`, Gateway API kinds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedDocument {
    pub origin: Origin,
    pub api_version: String,
    pub kind: String,
    pub name: Option<String>,
}

/// A document (or file) that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    pub file: String,
    /// 1-based line of the problem, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// 1-based document index; `None` for file-level problems (unreadable file).
    pub document: Option<usize>,
    /// `Kind namespace/name` when the document got far enough to say.
    pub resource: Option<String>,
    /// Field path within the document, e.g. `spec.http[0].timeout`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for LoadError {
    /// `file:line:column: document N (Kind ns/name): field spec.x: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(":")?;
        if let Some(document) = self.document {
            write!(f, " document {document}")?;
            if let Some(resource) = &self.resource {
                write!(f, " ({resource})")?;
            }
            f.write_str(":")?;
        }
        if let Some(field) = &self.field {
            write!(f, " field {field}:")?;
        }
        write!(f, " {}", self.message)
    }
}

impl std::error::Error for LoadError {}

/// Everything one load produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadReport {
    pub resources: Vec<LoadedResource>,
    pub skipped: Vec<SkippedDocument>,
    pub errors: Vec<LoadError>,
}

impl LoadReport {
    /// Loads files and directories (recursively, in sorted order, `.yaml`/`.yml`/`.json` only; a file
    /// named explicitly is loaded whatever its extension).
    pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> LoadReport {
        let mut report = LoadReport::default();
        for path in paths {
            report.load_path(path.as_ref());
        }
        report
    }

    fn load_path(&mut self, path: &Path) {
        if path.is_dir() {
            match config_files_under(path) {
                Ok(files) => files.iter().for_each(|file| self.load_file(file)),
                Err(err) => self.errors.push(file_error(path, format!("cannot read directory: {err}"))),
            }
        } else {
            self.load_file(path);
        }
    }

    fn load_file(&mut self, path: &Path) {
        match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => self.parse_str(&path.display().to_string(), &text),
                Err(err) => self.errors.push(file_error(path, format!("not valid UTF-8: {err}"))),
            },
            Err(err) => self.errors.push(file_error(path, format!("cannot read: {err}"))),
        }
    }

    /// Parses one file's text; `file` names it in origins and errors.
    pub fn parse_str(&mut self, file: &str, text: &str) {
        for (index, doc) in split_documents(text).into_iter().enumerate() {
            self.parse_document(file, index + 1, &doc);
        }
    }

    /// Number of loaded resources per kind.
    pub fn counts_by_kind(&self) -> BTreeMap<Kind, usize> {
        let mut counts = BTreeMap::new();
        for loaded in &self.resources {
            *counts.entry(loaded.resource.kind()).or_insert(0) += 1;
        }
        counts
    }

    /// Number of skipped documents per `apiVersion/kind`.
    pub fn skipped_by_type(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for skipped in &self.skipped {
            *counts.entry(format!("{} {}", skipped.api_version, skipped.kind)).or_insert(0) += 1;
        }
        counts
    }

    fn parse_document(&mut self, file: &str, document: usize, doc: &Document) {
        let origin = Origin { file: file.to_owned(), document, line: doc.first_line };
        let value: Value = match yaml_serde::from_str(&doc.text) {
            Ok(value) => value,
            Err(err) => {
                self.errors.push(yaml_error(&origin, doc, None, None, &err));
                return;
            }
        };
        if value.is_null() {
            return; // empty document or comments only
        }
        match list_items(&value) {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.parse_value(&origin, doc, item, Some(i));
                }
            }
            None => self.parse_value(&origin, doc, &value, None),
        }
    }

    fn parse_value(&mut self, origin: &Origin, doc: &Document, value: &Value, list_item: Option<usize>) {
        let item_prefix = |field: &str| match list_item {
            Some(i) if field.is_empty() => format!("items[{i}]"),
            Some(i) => format!("items[{i}].{field}"),
            None => field.to_owned(),
        };
        let error = |field: &str, resource: Option<String>, message: String| LoadError {
            file: origin.file.clone(),
            line: Some(origin.line),
            column: None,
            document: Some(origin.document),
            resource,
            field: Some(item_prefix(field)).filter(|f| !f.is_empty()),
            message,
        };
        let Some(mapping) = value.as_mapping() else {
            self.errors.push(error("", None, "expected a Kubernetes object (a mapping)".into()));
            return;
        };
        let text_field = |key: &str| mapping.get(key).and_then(Value::as_str).map(str::to_owned);
        let (Some(api_version), Some(kind)) = (text_field("apiVersion"), text_field("kind")) else {
            let missing = if text_field("apiVersion").is_none() { "apiVersion" } else { "kind" };
            self.errors.push(error(missing, None, "missing or not a string".into()));
            return;
        };
        let metadata = mapping.get("metadata");
        let name = metadata.and_then(|m| m.get("name")).and_then(Value::as_str).map(str::to_owned);
        let Some(known) = Kind::from_type(&api_version, &kind) else {
            self.skipped.push(SkippedDocument { origin: origin.clone(), api_version, kind, name });
            return;
        };
        let meta = super::ObjectMeta {
            name: name.clone().unwrap_or_default(),
            namespace: metadata.and_then(|m| m.get("namespace")).and_then(Value::as_str).map(str::to_owned),
            ..Default::default()
        };
        let reference = resource_ref(known, &meta);
        if name.as_deref().is_none_or(str::is_empty) {
            self.errors.push(error("metadata.name", Some(reference), "missing or empty".into()));
            return;
        }
        match decode(known, value.clone()) {
            Ok(resource) => self.resources.push(LoadedResource { origin: origin.clone(), resource }),
            Err(err) => {
                let field = err.path().to_string();
                // Decoding the text again (only on failure) recovers the line and column of the problem.
                let located = match list_item {
                    None => decode(known, yaml_serde::Deserializer::from_str(&doc.text)).err(),
                    Some(_) => None,
                };
                let inner = located.as_ref().map_or(err.inner(), |e| e.inner());
                self.errors.push(yaml_error(origin, doc, Some(item_prefix(&field)), Some(reference), inner));
            }
        }
    }
}

fn file_error(path: &Path, message: String) -> LoadError {
    LoadError {
        file: path.display().to_string(),
        line: None,
        column: None,
        document: None,
        resource: None,
        field: None,
        message,
    }
}

fn yaml_error(
    origin: &Origin,
    doc: &Document,
    field: Option<String>,
    resource: Option<String>,
    err: &yaml_serde::Error,
) -> LoadError {
    let location = err.location();
    LoadError {
        file: origin.file.clone(),
        line: Some(location.as_ref().map_or(origin.line, |l| doc.first_line + l.line() - 1)),
        column: location.as_ref().map(|l| l.column()),
        document: Some(origin.document),
        resource,
        field: field.clone().filter(|f| !f.is_empty() && f != "."),
        message: bare_message(err, field.as_deref()),
    }
}

/// The error text without what [`LoadError`] already says: the trailing position and a leading field path.
fn bare_message(err: &yaml_serde::Error, field: Option<&str>) -> String {
    let mut message = err.to_string();
    if err.location().is_some()
        && let Some(at) = message.rfind(" at line ")
        && !message[at..].contains(',')
    {
        message.truncate(at);
    }
    // yaml_serde prefixes the path it tracked itself, which may stop at the parent mapping.
    if let Some(field) = field
        && let Some((path, rest)) = message.split_once(": ")
        && field.starts_with(path)
    {
        message = rest.to_owned();
    }
    message
}

/// `kind: List` (or `ServiceList`, ...) with an `items` sequence.
fn list_items(value: &Value) -> Option<&Vec<Value>> {
    let kind = value.get("kind")?.as_str()?;
    if !kind.ends_with("List") {
        return None;
    }
    value.get("items")?.as_sequence()
}

/// One YAML document's text, with the separator line blanked so that columns stay true.
#[derive(Debug, PartialEq)]
struct Document {
    first_line: usize,
    text: String,
}

/// Splits a YAML stream at `---` lines (and drops `...` end markers), remembering each document's first line.
fn split_documents(text: &str) -> Vec<Document> {
    let mut documents = Vec::new();
    let mut current = Document { first_line: 1, text: String::new() };
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let is_separator = line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        let is_end_marker = line.starts_with("...") && line[3..].trim().is_empty();
        if is_separator {
            let inline = &line[3..];
            let first_line = if inline.trim().is_empty() { line_no + 1 } else { line_no };
            let previous = std::mem::replace(&mut current, Document { first_line, text: String::new() });
            if line_no > 1 {
                documents.push(previous);
            }
            // Content after `---` on the same line (e.g. `--- {kind: List}`) belongs to the new document.
            if first_line == line_no {
                current.text.push_str("   ");
                current.text.push_str(inline);
                current.text.push('\n');
            }
        } else if is_end_marker {
            current.text.push('\n');
        } else {
            current.text.push_str(line);
            current.text.push('\n');
        }
    }
    documents.push(current);
    documents
}

fn is_config_file(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

fn config_files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(config_files_under(&path)?);
        } else if is_config_file(&path) {
            files.push(path);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> LoadReport {
        let mut report = LoadReport::default();
        report.parse_str("test.yaml", text);
        report
    }

    #[test]
    fn splits_documents_keeping_line_numbers() {
        let docs = split_documents("a: 1\n---\nb: 2\n--- \n\nc: 3\n");
        let starts: Vec<usize> = docs.iter().map(|d| d.first_line).collect();
        assert_eq!(starts, [1, 3, 5]);
        assert!(docs[2].text.contains("c: 3"));
    }

    #[test]
    fn leading_separator_does_not_make_an_empty_first_document() {
        let docs = split_documents("---\nkind: A\n");
        assert_eq!(docs.len(), 1);
    }

    #[test]
    fn loads_known_kinds_and_skips_unknown_ones() {
        let report = parse(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: ns}\n\
             spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}], timeout: 2s}]}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\n",
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.resources.len(), 1);
        assert_eq!(report.resources[0].resource.reference(), "VirtualService ns/r");
        assert_eq!(report.resources[0].origin.line, 5);
        let skipped: Vec<&str> = report.skipped.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(skipped, ["ServiceAccount", "Gateway"]);
    }

    #[test]
    fn type_error_names_line_column_document_resource_and_field() {
        let report = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\
             apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: ns\n\
             spec:\n  hosts: [reviews]\n  http:\n  - timeout: soon\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
        );
        assert_eq!(report.resources.len(), 2, "the documents around the bad one still load");
        let [err] = report.errors.as_slice() else { panic!("{:?}", report.errors) };
        assert_eq!(err.line, Some(13));
        assert_eq!(err.document, Some(2));
        assert_eq!(err.resource.as_deref(), Some("VirtualService ns/r"));
        assert_eq!(err.field.as_deref(), Some("spec.http[0].timeout"));
        assert!(err.message.contains("invalid duration \"soon\""), "{}", err.message);
        assert!(err.to_string().starts_with("test.yaml:13:"), "{err}");
    }

    #[test]
    fn syntax_error_is_located_and_later_documents_load() {
        let report = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
        );
        assert_eq!(report.resources.len(), 1);
        let [err] = report.errors.as_slice() else { panic!("{:?}", report.errors) };
        assert_eq!(err.document, Some(1));
        assert!(err.line.is_some_and(|l| l <= 4), "{err}");
    }

    #[test]
    fn enum_typo_lists_the_valid_values() {
        let report = parse(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec:\n  mtls:\n    mode: STRIKT\n",
        );
        let [err] = report.errors.as_slice() else { panic!("{:?}", report.errors) };
        assert_eq!(err.field.as_deref(), Some("spec.mtls.mode"));
        assert!(err.message.contains("STRICT"), "{}", err.message);
        assert_eq!(err.line, Some(6));
    }

    #[test]
    fn missing_name_kind_and_non_mapping_documents_are_errors() {
        let report = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {}\n---\nmetadata: {name: x}\n---\n- 1\n- 2\n---\n# only a comment\n",
        );
        let fields: Vec<Option<&str>> = report.errors.iter().map(|e| e.field.as_deref()).collect();
        assert_eq!(fields, [Some("metadata.name"), Some("apiVersion"), None]);
        assert!(report.resources.is_empty() && report.skipped.is_empty());
    }

    #[test]
    fn lists_and_json_load() {
        let report = parse(
            r#"{"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "x"}, "spec": {"ports": [{"port": 80}]}},
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b"}, "spec": {"ports": [{"port": "eighty"}]}}
            ]}"#,
        );
        assert_eq!(report.resources.len(), 1);
        let [err] = report.errors.as_slice() else { panic!("{:?}", report.errors) };
        assert_eq!(err.field.as_deref(), Some("items[1].spec.ports[0].port"));
        assert_eq!(err.resource.as_deref(), Some("Service b"));
    }

    #[test]
    fn secrets_keep_key_names_only() {
        let report =
            parse("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {tls.crt: c2VjcmV0, tls.key: c2VjcmV0}\n");
        let Resource::Secret(secret) = &report.resources[0].resource else { panic!() };
        assert_eq!(secret.data.keys().collect::<Vec<_>>(), ["tls.crt", "tls.key"]);
        assert!(secret.data.values().all(String::is_empty));
    }

    #[test]
    fn unreadable_paths_are_reported_not_fatal() {
        let report = LoadReport::load_paths(&["/nonexistent/meshlens.yaml"]);
        let [err] = report.errors.as_slice() else { panic!() };
        assert!(err.message.starts_with("cannot read"), "{err}");
    }

    #[test]
    fn arbitrary_text_never_panics() {
        for text in [
            "\t\tkind: [",
            "---\n---\n---",
            "{{{{",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: 7\n",
            "\u{feff}a: b",
        ] {
            let _ = parse(text);
        }
    }
}
