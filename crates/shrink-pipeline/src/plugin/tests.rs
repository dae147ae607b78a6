//! Report parsing and load errors of the plugin host (loading real plugins
//! is tested in `tests/it/plugins.rs`, which builds them).

use super::{PluginError, parse_report};

#[test]
fn reports_parse_and_bad_ones_say_where() {
    let r = parse_report(
        br#"{"summary": "s", "figures": {"a": 1}, "layers": [{"layer": "c", "note": "n", "figures": {}}], "files": ["x/y.bin"]}"#,
    )
    .unwrap();
    assert_eq!((r.summary.as_str(), r.figures["a"], r.layers[0].layer.as_str()), ("s", 1.0, "c"));
    assert_eq!(r.files, ["x/y.bin"]);
    assert_eq!(parse_report(b"{}").unwrap(), shrink_stage::StageReport::default());
    let cases: [(&[u8], &str); 5] = [
        (b"\xff", "not JSON"),
        (b"[]", "not a JSON object"),
        (br#"{"figures": {"a": "1"}}"#, "`figures.a` is not a number"),
        (br#"{"layers": [{"note": 3}]}"#, "`layers[0].note` is not a string"),
        (br#"{"files": ["../../etc/passwd"]}"#, "is not a path inside the output folder"),
    ];
    for (bytes, want) in cases {
        let e = parse_report(bytes).unwrap_err();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn a_missing_or_foreign_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("shrink-plugin-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("nope.so");
    assert!(matches!(super::Plugin::load(&missing), Err(PluginError::NotFound { .. })));
    let text = dir.join("not-a-library.so");
    std::fs::write(&text, "hello").unwrap();
    let e = super::Plugin::load(&text).unwrap_err();
    assert!(matches!(e, PluginError::Load { .. }), "{e}");
    assert!(e.to_string().starts_with(&format!("plugin {}: cannot load", text.display())), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
