// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    switchboard_app::without_gdk_gl();
    if std::env::args().nth(1).as_deref() == Some(switchboard_app::WINDOW_HOST_ARG) {
        switchboard_app::run_window_host();
    } else {
        switchboard_app::run();
    }
}
