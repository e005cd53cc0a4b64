import Testing

@testable import TollgateSidecar

/// The small text routines of the forwarding path: `Date` values and `Connection` tokens.
@Suite struct HeaderTextTests {
    @Test func datesAreIMFFixdate() {
        #expect(HTTPDate.format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        // The example of RFC 9110 §5.6.7.
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.format(951_782_400) == "Tue, 29 Feb 2000 00:00:00 GMT")
        #expect(HTTPDate.now().hasSuffix(" GMT") && HTTPDate.now().count == 29)
    }

    @Test(arguments: [
        ("close", true), ("Close", true), (" CLOSE ", true), ("keep-alive, close", true), ("close,X-Hop", true),
        ("\tclose\t", true), ("keep-alive", false), ("x-close-hint", false), ("closed", false), ("clos", false),
        ("", false), (",", false),
    ])
    func connectionCloseIsAToken(value: String, closes: Bool) {
        #expect(HopByHop.saysClose(value) == closes, "\(value)")
    }

    @Test func hopByHopNames() {
        for name in ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "proxy-authenticate"] {
            #expect(HopByHop.isHopByHop(name, listedIn: []), "\(name)")
        }
        #expect(HopByHop.isHopByHop("x-up-hop", listedIn: ["x-up-hop"]))
        #expect(!HopByHop.isHopByHop("content-type", listedIn: ["x-up-hop"]))
        #expect(!HopByHop.isHopByHop("tea", listedIn: []))
    }
}
