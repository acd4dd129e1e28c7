fn main() {
    // The webview's page is `ui/dist`, built by the core crate's build script (a dependency,
    // so it exists before this crate compiles). tauri-build watches it only if it is already
    // there when this script runs, which a fresh clone cannot promise: watch it ourselves so a
    // rebuilt page is always re-embedded.
    println!("cargo:rerun-if-changed=ui/dist");
    tauri_build::build();
}
