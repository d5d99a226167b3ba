import Foundation
import Testing
@testable import Lab

/// Golden layout dumps must not depend on where a cell ran: QEMU's full extent paths are cut to
/// the file's own name (a VMDK golden recorded in one work directory failed in another).
struct NativeLayoutTests {
    @Test func extentPathsKeepOnlyTheFileName() throws {
        let json: [String: Any] = ["data": ["cid": 7, "extents": [["filename": "/tmp/bootlab-lab-1/x/mnt/main.vmdk", "cluster-size": 65536]]]]
        let cleaned = NativeLayout.withoutDirectories(json)
        let data = try JSONSerialization.data(withJSONObject: cleaned, options: [.sortedKeys])
        #expect(String(decoding: data, as: UTF8.self) == #"{"data":{"cid":7,"extents":[{"cluster-size":65536,"filename":"main.vmdk"}]}}"#)
    }
}
