/// The byte classes of RFC 9110 and RFC 9112 that the HTTP/1.1 parsers test, as comparisons (no table to
/// load through a lazily initialised global on the hot path).
enum HTTP1Byte {
    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")
    static let space = UInt8(ascii: " ")
    static let tab = UInt8(ascii: "\t")
    static let colon = UInt8(ascii: ":")
    static let comma = UInt8(ascii: ",")
    static let semicolon = UInt8(ascii: ";")

    /// `tchar` (RFC 9110 §5.6.2): what a method, a field name or a transfer coding is made of.
    @inline(__always)
    static func isTokenChar(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }

    /// A byte a field value may hold (field-vchar, SP, HTAB; obs-text too, as RFC 9110 §5.5 lets a
    /// recipient accept): anything but the control characters, CR and LF among them.
    @inline(__always)
    static func isFieldValueByte(_ byte: UInt8) -> Bool {
        byte == tab || (byte >= 0x20 && byte != 0x7F)
    }

    @inline(__always)
    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == space || byte == tab
    }

    @inline(__always)
    static func lowercased(_ byte: UInt8) -> UInt8 {
        byte &- UInt8(ascii: "A") < 26 ? byte | 0x20 : byte
    }

    /// The value of a hexadecimal digit, or nil.
    @inline(__always)
    static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte &- UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte &- UInt8(ascii: "a")) + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte &- UInt8(ascii: "A")) + 10
        default: nil
        }
    }
}

/// Reading a head's bytes by offset: the parsers keep ranges into the buffer they were given, never
/// copies of its text.
extension UnsafeRawBufferPointer {
    /// Whether the bytes in `range` equal `lowercase` ignoring ASCII case (`lowercase` is lower case).
    func equalsIgnoringCase(_ range: Range<Int>, _ lowercase: StaticString) -> Bool {
        guard range.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = lowercase.utf8Start
        var offset = 0
        for index in range {
            if HTTP1Byte.lowercased(self[index]) != expected[offset] { return false }
            offset += 1
        }
        return true
    }

    /// `range` without the optional whitespace (OWS) at either end.
    func trimmingWhitespace(_ range: Range<Int>) -> Range<Int> {
        var lower = range.lowerBound
        var upper = range.upperBound
        while lower < upper, HTTP1Byte.isWhitespace(self[lower]) { lower += 1 }
        while upper > lower, HTTP1Byte.isWhitespace(self[upper - 1]) { upper -= 1 }
        return lower..<upper
    }

    /// The decimal number `1*DIGIT` in `range`; nil when it is empty, holds anything else, or has more
    /// than 18 digits (beyond any real length, and safe from overflow).
    func decimal(_ range: Range<Int>) -> Int? {
        guard !range.isEmpty, range.count <= 18 else { return nil }
        var value = 0
        for index in range {
            let digit = self[index] &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            value = value * 10 + Int(digit)
        }
        return value
    }

    /// Calls `body` with each element of the comma-separated list in `range` (RFC 9110 §5.6.1), trimmed,
    /// skipping the empty ones a list may hold.
    func forEachListElement(_ range: Range<Int>, _ body: (Range<Int>) -> Void) {
        var start = range.lowerBound
        var index = start
        while index <= range.upperBound {
            if index == range.upperBound || self[index] == HTTP1Byte.comma {
                let element = trimmingWhitespace(start..<index)
                if !element.isEmpty { body(element) }
                start = index + 1
            }
            index += 1
        }
    }
}

/// Finds the CRLF-terminated lines of a head as its bytes arrive, so that no byte is searched twice
/// however the head is split across reads.
struct HeadLineScanner: Equatable, Sendable {
    /// Where the line being looked for begins, counted from the head's first byte.
    private(set) var lineStart = 0
    /// How far the search for that line's LF has gone.
    private(set) var searched = 0

    enum Line: Equatable {
        /// A complete line, without its CRLF.
        case line(Range<Int>)
        case needMore
        /// The line ends with a LF alone.
        case bareLineFeed
    }

    mutating func next(in bytes: UnsafeRawBufferPointer) -> Line {
        var index = Swift.max(searched, lineStart)
        while index < bytes.count {
            if bytes[index] == HTTP1Byte.lf {
                guard index > lineStart, bytes[index - 1] == HTTP1Byte.cr else { return .bareLineFeed }
                let line = lineStart..<(index - 1)
                lineStart = index + 1
                searched = lineStart
                return .line(line)
            }
            index += 1
        }
        searched = index
        return .needMore
    }
}

/// Splits a head into its start line and its fields as its bytes arrive, within a size limit: the part
/// the request parser and the response scanner share.
struct HeadReader: Equatable, Sendable {
    enum Event: Equatable {
        case needMore
        /// The request line or status line, without its CRLF.
        case startLine(Range<Int>)
        case field(name: Range<Int>, value: Range<Int>)
        /// The empty line: the head is `length` bytes long, its field lines span `fields`.
        case end(length: Int, fields: Range<Int>)
        case failed(HTTP1Error)
    }

    let maxHeadSize: Int
    let maxStartLine: Int
    /// What a start line over `maxStartLine` is refused as.
    let startLineTooLong: HTTP1Error
    private var lines = HeadLineScanner()
    private var fieldsStart: Int?

    init(maxHeadSize: Int, maxStartLine: Int, startLineTooLong: HTTP1Error) {
        self.maxHeadSize = maxHeadSize
        self.maxStartLine = min(maxStartLine, maxHeadSize)
        self.startLineTooLong = startLineTooLong
    }

    mutating func next(in bytes: UnsafeRawBufferPointer) -> Event {
        while true {
            switch lines.next(in: bytes) {
            case .needMore:
                if fieldsStart == nil, lines.searched - lines.lineStart > maxStartLine { return .failed(startLineTooLong) }
                return lines.searched > maxHeadSize ? .failed(.headTooLarge) : .needMore
            case .bareLineFeed:
                return .failed(.bareLineEnding)
            case .line(let line):
                if fieldsStart == nil, line.count > maxStartLine { return .failed(startLineTooLong) }
                if line.upperBound + 2 > maxHeadSize { return .failed(.headTooLarge) }
                guard let fieldsStart else {
                    // Empty lines before a message are ignored (RFC 9112 §2.2); they still count to the size.
                    if line.isEmpty { continue }
                    fieldsStart = lines.lineStart
                    return .startLine(line)
                }
                if line.isEmpty { return .end(length: lines.lineStart, fields: fieldsStart..<line.lowerBound) }
                switch FieldLine.read(line, in: bytes) {
                case .success(let field): return .field(name: field.name, value: field.value)
                case .failure(let error): return .failed(error)
                }
            }
        }
    }
}

extension UnsafeRawBufferPointer {
    /// Calls `body` with the name and value of each field line in `fields`, the field lines of a head
    /// that parsed (each ends with CRLF, and each is valid).
    func forEachField(in fields: Range<Int>, _ body: (_ name: Range<Int>, _ value: Range<Int>) -> Void) {
        var start = fields.lowerBound
        var index = start
        while index < fields.upperBound {
            if self[index] == HTTP1Byte.lf {
                if case .success(let field) = FieldLine.read(start..<(index - 1), in: self) { body(field.name, field.value) }
                start = index + 1
            }
            index += 1
        }
    }
}
