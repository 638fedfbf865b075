fn main() {
    std::process::exit(a3s_box::cli::dispatch(std::env::args_os().collect()));
}
