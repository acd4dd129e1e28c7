// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    switchboard_app::without_gdk_gl();
    switchboard_app::run();
}
