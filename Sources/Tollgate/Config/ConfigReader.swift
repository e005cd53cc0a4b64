import Yams

/// Reads typed values out of a composed YAML tree, turning every mismatch into a `ConfigurationError`
/// that names the file, the line, the field and what was expected against what was found.
///
/// Values are read from the nodes' text and style rather than from Yams' resolved types, so that the rules
/// are the file format's own: `"5"` (quoted) is a string, not an integer, and `yes` is not a boolean.
struct ConfigReader {
    let file: String
    /// Duplicate keys renamed to get past Yams' composer, mapped back to their text (see `YAMLDocument`).
    let renamedKeys: [String: String]

    func error(at node: Node?, _ path: FieldPath, _ message: String) -> ConfigurationError {
        ConfigurationError(file: file, line: node?.mark?.line, path: path.description, message: message)
    }

    func error(line: Int?, _ path: FieldPath, _ message: String) -> ConfigurationError {
        ConfigurationError(file: file, line: line, path: path.description, message: message)
    }

    // MARK: Mappings

    /// The entries of a mapping, checked for non-scalar and duplicate keys.
    /// - Parameters:
    ///   - expected: what the mapping is, for the message when `node` is something else.
    ///   - keyKind: what its keys are (`field`, `plan name`), for duplicate and key messages.
    func fields(
        of node: Node, at path: FieldPath, expected: String, keyKind: String = "field"
    ) throws(ConfigurationError) -> Fields {
        guard case .mapping(let mapping) = node else {
            throw error(at: node, path, "expected \(expected), found \(describe(node))")
        }
        var entries: [Fields.Entry] = []
        for (key, value) in mapping {
            guard case .scalar(let scalar) = key else {
                throw error(at: key, path, "expected a \(keyKind) name as key, found \(describe(key))")
            }
            let name = renamedKeys[scalar.string] ?? scalar.string
            if let first = entries.first(where: { $0.name == name }) {
                let earlier = first.key.mark.map { " (first at line \($0.line))" } ?? ""
                throw error(
                    at: key, path.appending(name), "duplicate \(keyKind) \"\(name)\"\(earlier); each may appear only once")
            }
            entries.append(Fields.Entry(name: name, key: key, value: value))
        }
        return Fields(node: node, path: path, entries: entries)
    }

    /// Rejects every field not in `allowed`, naming the field and listing the allowed ones.
    func rejectUnknown(_ fields: Fields, allowed: [String], in what: String) throws(ConfigurationError) {
        for entry in fields.entries where !allowed.contains(entry.name) {
            throw unknownField(entry, in: fields, allowed: allowed, what: what)
        }
    }

    func unknownField(_ entry: Fields.Entry, in fields: Fields, allowed: [String], what: String) -> ConfigurationError {
        let hint = entry.name == "<<" ? " (YAML merge keys are not supported)" : ""
        return error(
            at: entry.key, fields.path.appending(entry.name),
            "unknown field \"\(entry.name)\"\(hint); \(what) takes \(list(allowed))")
    }

    /// The value of a required field, or an error at the mapping saying what the field should hold.
    func required(_ name: String, in fields: Fields, expected: String) throws(ConfigurationError) -> Node {
        guard let node = fields[name] else {
            throw error(at: fields.node, fields.path.appending(name), "missing required field; expected \(expected)")
        }
        return node
    }

    // MARK: Scalars

    /// A positive integer written as a plain YAML number (`1000`, `1_000`).
    func positiveInteger(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> Int64 {
        let expected = "expected a positive integer"
        guard case .scalar(let scalar) = node, scalar.style == .plain || scalar.style == .any else {
            if case .scalar(let scalar) = node, Self.integerValue(scalar.string) != nil {
                throw error(at: node, path, "\(expected), found the string \"\(scalar.string)\"; write numbers without quotes")
            }
            throw error(at: node, path, "\(expected), found \(describe(node))")
        }
        let text = scalar.string
        guard let value = Self.integerValue(text) else {
            if Self.looksNumeric(text) {
                throw error(at: node, path, "\(expected) (a whole number), found \(text)")
            }
            throw error(at: node, path, "\(expected), found \(describe(node))")
        }
        guard let value else {
            throw error(at: node, path, "\(expected) no larger than \(Int64.max), found \(text)")
        }
        guard value > 0 else { throw error(at: node, path, "\(expected), found \(text)") }
        return value
    }

    /// `true` or `false`, unquoted.
    func bool(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> Bool {
        if case .scalar(let scalar) = node, scalar.style == .plain || scalar.style == .any {
            switch scalar.string {
            case "true", "True", "TRUE": return true
            case "false", "False", "FALSE": return false
            default: break
            }
        }
        throw error(at: node, path, "expected true or false, found \(describe(node))")
    }

    /// A non-empty string, quoted or not.
    func string(_ node: Node, at path: FieldPath, expected: String) throws(ConfigurationError) -> String {
        guard case .scalar(let scalar) = node, !Self.isNull(scalar), !scalar.string.isEmpty else {
            throw error(at: node, path, "expected \(expected), found \(describe(node))")
        }
        return scalar.string
    }

    /// One of a fixed set of words.
    func choice<Value>(
        _ node: Node, at path: FieldPath, from options: [(name: String, value: Value)]
    ) throws(ConfigurationError) -> Value {
        let names = options.map(\.name)
        if case .scalar(let scalar) = node, let match = options.first(where: { $0.name == scalar.string }) {
            return match.value
        }
        throw error(at: node, path, "expected one of \(list(names, conjunction: "or")), found \(describe(node))")
    }

    /// A duration in the limiters' time unit, written in the notation of `DurationSyntax`.
    func duration(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> Int64 {
        guard case .scalar(let scalar) = node, !Self.isNull(scalar) else {
            throw error(at: node, path, "expected \(DurationSyntax.expectedForm), found \(describe(node))")
        }
        do {
            return try DurationSyntax.ticks(scalar.string)
        } catch {
            switch error {
            case .zero:
                throw self.error(at: node, path, "expected a positive duration, found \(scalar.string)")
            case .tooLong:
                throw self.error(at: node, path, "expected a duration of at most \(DurationSyntax.maximumDays)d, found \(scalar.string)")
            case .malformed:
                throw self.error(
                    at: node, path, "expected \(DurationSyntax.expectedForm), found \(describe(node))")
            }
        }
    }

    // MARK: Describing what was found

    /// A short description of a node for "found …" in messages: plain numbers and words as written,
    /// strings in quotes, collections by kind. Long text is cut, so a message never echoes a whole value;
    /// even so, a section that holds secrets (API keys) must not pass their nodes here.
    func describe(_ node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        case .scalar(let scalar):
            if Self.isNull(scalar) { return "nothing" }
            var text = scalar.string
            if text.count > 40 { text = String(text.prefix(40)) + "…" }
            switch scalar.style {
            case .plain, .any:
                if Self.looksNumeric(text) || ["true", "false", "True", "False", "TRUE", "FALSE"].contains(text) {
                    return text
                }
                return "\"\(text)\""
            case .singleQuoted, .doubleQuoted: return "the string \"\(text)\""
            case .literal, .folded: return "a block of text"
            }
        }
    }

    /// `a, b, c and d`.
    func list(_ items: [String], conjunction: String = "and") -> String {
        guard items.count > 1 else { return items.first ?? "nothing" }
        return items.dropLast().joined(separator: ", ") + " \(conjunction) " + items.last!
    }

    static func isNull(_ scalar: Node.Scalar) -> Bool {
        guard scalar.style == .plain || scalar.style == .any else { return false }
        return ["", "~", "null", "Null", "NULL"].contains(scalar.string)
    }

    /// Nil when `text` is not a decimal integer; `.some(nil)` when it is one too large for Int64.
    static func integerValue(_ text: String) -> Int64?? {
        var body = Substring(text)
        var negative = false
        if let sign = body.first, sign == "-" || sign == "+" {
            negative = sign == "-"
            body = body.dropFirst()
        }
        guard let first = body.first, first.isASCII, first.isNumber, let last = body.last, last.isASCII, last.isNumber,
            body.allSatisfy({ ($0.isASCII && $0.isNumber) || $0 == "_" }), !body.contains("__")
        else { return nil }
        let digits = (negative ? "-" : "") + body.filter { $0 != "_" }
        return .some(Int64(digits))
    }

    /// Numbers that are not decimal integers: `1.5`, `1e3`, `.5`, `0x10`.
    static func looksNumeric(_ text: String) -> Bool {
        if integerValue(text) != nil || Double(text) != nil { return true }
        let lower = text.lowercased()
        return lower.hasPrefix("0x") || lower.hasPrefix("0o") || lower.hasPrefix("0b") || lower == ".inf" || lower == ".nan"
    }
}

/// The entries of one YAML mapping, by name, in file order.
struct Fields {
    struct Entry {
        let name: String
        let key: Node
        let value: Node
    }

    /// The mapping itself: its mark is where missing fields are reported.
    let node: Node
    let path: FieldPath
    let entries: [Entry]

    subscript(name: String) -> Node? {
        entries.first { $0.name == name }?.value
    }
}
