import Foundation
import HTTPTypes
import Hummingbird
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
struct StandInUpstream: Upstream {
    static let marker = HTTPField.Name("X-Stand-In")!

    func respond(to request: Request, context: SidecarRequestContext, settings: ForwardingSettings) async -> Response {
        let path = (request.head.path ?? "/").split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        let segments = path.split(separator: "/").map(String.init)
        var request = request
        // Read (and drop) what was sent, within the body cap, as a real API would.
        let body = try? await request.collectBody(upTo: settings.maxBodySize)
        switch (request.method, segments) {
        case (.post, ["api", "v1", "messages", "send"]):
            return json(.ok, "{\"id\":\"msg_\(Self.randomID())\",\"status\":\"queued\"}")
        case (.post, ["api", "v1", "messages", "bulk"]):
            var accepted = 0
            if let body, let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any],
                let recipients = object["recipients"] as? [Any]
            {
                accepted = recipients.count
            }
            return json(.ok, "{\"status\":\"queued\",\"accepted\":\(accepted)}")
        case (.get, let parts) where parts.count == 6 && parts[0...2] == ["api", "v1", "orgs"] && parts[4] == "messages":
            return json(.ok, "{\"id\":\(Self.quoted(parts[5])),\"status\":\"delivered\"}")
        default:
            return json(.notFound, "{\"error\":\"not_found\",\"message\":\"the stand-in message API answers POST /api/v1/messages/send\"}")
        }
    }

    func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        let body = ByteBuffer(string: text)
        return Response(
            status: status,
            headers: [.contentType: "application/json", .contentLength: String(body.readableBytes), Self.marker: "tollgate"],
            body: ResponseBody(byteBuffer: body))
    }

    static func randomID() -> String {
        String(UInt64.random(in: 0...UInt64.max), radix: 16)
    }

    static func quoted(_ text: String) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: [text], options: [.fragmentsAllowed])) ?? Data("[\"\"]".utf8)
        return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
    }
}
