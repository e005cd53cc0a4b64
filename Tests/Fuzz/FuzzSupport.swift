// Shared by the fuzz targets: checks that hold for every input, and a trap that names the one broken.

/// Stops the run (libFuzzer keeps the input) when `condition` does not hold.
func require(_ condition: @autoclosure () -> Bool, _ what: StaticString) {
    if !condition() { fatalError("invariant broken: \(what)") }
}

/// Runs `framer` over `bytes`, as a relay does, and checks that it never claims a byte past the end
/// of what it was given; returns how many bytes the body took, or nil when it did not end.
func followBody(_ framing: BodyFraming, _ bytes: UnsafeRawBufferPointer, maxBodySize: Int) -> Int? {
    var framer = BodyFramer(framing, maxBodySize: maxBodySize)
    // In two pieces, split where the body's own bytes say, so that state carried across reads is tried.
    let split = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
    switch framer.advance(UnsafeRawBufferPointer(rebasing: bytes[..<split])) {
    case .ended(let taken):
        require(taken <= split, "a body ends within the bytes given")
        return taken
    case .failed:
        return nil
    case .needMore:
        break
    }
    switch framer.advance(UnsafeRawBufferPointer(rebasing: bytes[split...])) {
    case .ended(let taken):
        require(taken <= bytes.count - split, "a body ends within the bytes given")
        require(framer.isComplete, "an ended body is complete")
        return split + taken
    case .failed, .needMore:
        return nil
    }
}
