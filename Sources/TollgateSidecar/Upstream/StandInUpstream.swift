import Foundation
import NIOCore

/// A stand-in for the message API, answering in process when `upstream.url` is not configured, so that
/// the sidecar can be tried with nothing else running. It accepts what it is sent and delivers nothing.
///
/// - `POST /api/v1/messages/send` → 200 `{"id":"msg_…","status":"queued"}`
/// - `POST /api/v1/messages/bulk` → 200 `{"status":"queued","accepted":N}` (N: elements of `recipients`)
/// - `GET /api/v1/orgs/{org}/messages/{id}` → 200 `{"id":"…","status":"delivered"}`
/// - anything else → 404 `{"error":"not_found"}`
///
/// Every answer carries `X-Stand-In: tollgate`, so nobody mistakes it for the real API.
///
/// It sits where an upstream connection would: `ByteListenerHandler` writes it the bytes an upstream
/// would be sent (the rewritten head, the body as relayed) and relays its answer's bytes with the same
/// code that relays an upstream's, RateLimit fields included. So the stand-in exercises the whole data
/// path but the socket.
struct StandInUpstream: Sendable {
    /// What its requests are addressed to (the `Host` of a request that names none).
    static let target = UpstreamTarget(host: "localhost", port: 80, tls: false, pathPrefix: "")

    /// One request as the stand-in receives it, read as its bytes come.
    struct Exchange: Sendable {
        private var received = ByteBuffer()
        private var parser = RequestHeadParser(limits: .init(maxHeadSize: 1 << 20, maxRequestLine: 1 << 20, maxBodySize: .max))
        private var request: (method: HTTP1Method, path: String, head: Bool)?
        private var framer = BodyFramer(.none)
        private var content = ByteBuffer()

        init() {}

        /// Takes the next bytes of the request; the answer's bytes once the request is whole.
        mutating func receive(_ bytes: ByteBuffer) -> ByteBuffer? {
            var bytes = bytes
            received.writeBuffer(&bytes)
            if request == nil {
                switch parser.parse(received) {
                case .needMore:
                    return nil
                case .failed:
                    return StandInUpstream.answer(status: 400, reason: "Bad Request", json: "{\"error\":\"bad_request\"}", head: false)
                case .head(let head):
                    let path = received.withUnsafeReadableBytes { String(decoding: $0[head.target], as: UTF8.self) }
                    request = (head.method, path, head.method == .head)
                    framer = BodyFramer(head.body)
                    received.moveReaderIndex(forwardBy: head.length)
                }
            }
            guard let request else { return nil }
            let start = received.readerIndex
            var ranges: [Range<Int>] = []
            let progress = received.withUnsafeReadableBytes { framer.advance($0) { ranges.append($0) } }
            for range in ranges { content.writeImmutableBuffer(received.getSlice(at: start + range.lowerBound, length: range.count)!) }
            received.clear()
            switch progress {
            case .needMore:
                return nil
            case .failed:
                return StandInUpstream.answer(status: 400, reason: "Bad Request", json: "{\"error\":\"bad_request\"}", head: false)
            case .ended:
                return StandInUpstream.respond(method: request.method, path: request.path, body: content, head: request.head)
            }
        }
    }

    /// The answer to a whole request.
    static func respond(method: HTTP1Method, path target: String, body: ByteBuffer, head: Bool) -> ByteBuffer {
        let path = target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        let segments = path.split(separator: "/").map(String.init)
        switch (method, segments) {
        case (.post, ["api", "v1", "messages", "send"]):
            return answer(status: 200, reason: "OK", json: "{\"id\":\"msg_\(randomID())\",\"status\":\"queued\"}", head: head)
        case (.post, ["api", "v1", "messages", "bulk"]):
            var accepted = 0
            if let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any],
                let recipients = object["recipients"] as? [Any]
            {
                accepted = recipients.count
            }
            return answer(status: 200, reason: "OK", json: "{\"status\":\"queued\",\"accepted\":\(accepted)}", head: head)
        case (.get, let parts) where parts.count == 6 && parts[0...2] == ["api", "v1", "orgs"] && parts[4] == "messages":
            return answer(status: 200, reason: "OK", json: "{\"id\":\(quoted(parts[5])),\"status\":\"delivered\"}", head: head)
        default:
            return answer(
                status: 404, reason: "Not Found",
                json: "{\"error\":\"not_found\",\"message\":\"the stand-in message API answers POST /api/v1/messages/send\"}", head: head)
        }
    }

    /// An HTTP/1.1 answer with a JSON body (its head alone for a `HEAD` request).
    static func answer(status: Int, reason: String, json: String, head: Bool) -> ByteBuffer {
        var bytes = ByteBuffer()
        bytes.writeString("HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/json\r\nContent-Length: \(json.utf8.count)\r\n")
        bytes.writeStaticString("X-Stand-In: tollgate\r\n\r\n")
        if !head { bytes.writeString(json) }
        return bytes
    }

    static func randomID() -> String {
        String(UInt64.random(in: 0...UInt64.max), radix: 16)
    }

    static func quoted(_ text: String) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: [text], options: [.fragmentsAllowed])) ?? Data("[\"\"]".utf8)
        return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
    }
}
