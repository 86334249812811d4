fn main() {
    println!("diarized");
}
