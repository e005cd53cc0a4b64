import Yams

/// Composes configuration text into a YAML node tree, turning Yams' errors into `ConfigurationError`s.
///
/// Yams' composer rejects a mapping with a repeated key outright, naming only the key and the line of its
/// first occurrence. To report the repetition like any other error — at the second occurrence, with the
/// field path — the first occurrence is renamed with a marker that cannot appear in a configuration and the
/// text composed again; the reader maps the marker back (`renamedKeys`) and finds the duplicate itself.
struct YAMLDocument {
    /// The root node, or nil for a file without a document (empty, or only comments).
    let root: Node?
    /// Marker-suffixed key text mapped back to the key as written.
    let renamedKeys: [String: String]

    /// Enough for any realistic file; past this, the first remaining duplicate is reported without a path.
    static let maximumRenames = 64

    static func compose(_ yaml: String, file: String) throws(ConfigurationError) -> YAMLDocument {
        var text = yaml
        var renamed: [String: String] = [:]
        while true {
            do {
                return YAMLDocument(root: try Yams.compose(yaml: text), renamedKeys: renamed)
            } catch YamlError.duplicatedKeysInMapping(let duplicates, let context) {
                let key = duplicates.first ?? ""
                let marked = key + "\u{E000}\(renamed.count)"
                guard renamed.count < maximumRenames,
                    let renamedText = rename(key, to: marked, at: context.mark, in: text)
                else {
                    throw ConfigurationError(
                        file: file, line: context.mark.line, path: "",
                        message: "duplicate key \"\(renamed[key] ?? key)\"; each key may appear only once in a mapping")
                }
                text = renamedText
                renamed[marked] = key
            } catch let error as YamlError {
                throw syntaxError(error, yaml: yaml, file: file)
            } catch {
                throw ConfigurationError(file: file, line: nil, path: "", message: "cannot read the YAML: \(error)")
            }
        }
    }

    /// `text` with the key written at `mark` (plain or quoted, without escapes) renamed, or nil when the
    /// text at `mark` is not the key as written.
    static func rename(_ key: String, to marked: String, at mark: Mark, in text: String) -> String? {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { Array($0.unicodeScalars) }
        guard mark.line >= 1, mark.line <= lines.count else { return nil }
        let line = lines[mark.line - 1]
        var start = mark.column - 1
        guard start >= 0, start < line.count else { return nil }
        if line[start] == "\"" || line[start] == "'" { start += 1 }
        let keyScalars = Array(key.unicodeScalars)
        let end = start + keyScalars.count
        guard !keyScalars.isEmpty, end <= line.count, Array(line[start..<end]) == keyScalars else { return nil }
        lines[mark.line - 1] = Array(line[..<start]) + Array(marked.unicodeScalars) + Array(line[end...])
        return lines.map { String(String.UnicodeScalarView($0)) }.joined(separator: "\n")
    }

    static func syntaxError(_ error: YamlError, yaml: String, file: String) -> ConfigurationError {
        func invalid(_ line: Int?, _ message: String) -> ConfigurationError {
            ConfigurationError(file: file, line: line, path: "", message: "invalid YAML: \(message)")
        }
        func detail(_ problem: String, _ mark: Mark, _ context: YamlError.Context?) -> String {
            var message = "\(problem) at column \(mark.column)"
            if let context { message += " (\(context.text) at line \(context.mark.line))" }
            return message
        }
        switch error {
        case .composer(let context, _, let mark, _)
        where context?.text == "expected a single document in the stream":
            return invalid(mark.line, "expected a single document, found another one starting here")
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            return invalid(mark.line, detail(problem, mark, context))
        case .reader(let problem, let offset, _, _):
            let line = offset.map { offset in 1 + yaml.prefix(offset).count(where: { $0 == "\n" || $0 == "\r\n" }) }
            return invalid(line, problem)
        default:
            return invalid(nil, "\(error)")
        }
    }
}
