import BlockCore
import Testing
@testable import DiskFormats

/// The bounded raw-deflate decoder on streams made by zlib (python's zlib, window bits -12 as
/// QEMU uses), and on broken ones.
@Suite struct QCOW2InflateTests {
    static func hex(_ s: String) -> [UInt8] { [UInt8](hex: s)! }

    @Test func storedFixedAndDynamicBlocks() throws {
        #expect(try QCOW2Inflate.inflate(Self.hex("010300fcff78797a"), capacity: 100) == Array("xyz".utf8))
        #expect(try QCOW2Inflate.inflate(Self.hex("4b0400"), capacity: 100) == Array("a".utf8))
        #expect(try QCOW2Inflate.inflate(Self.hex("cb48cdc9c957c8402701"), capacity: 100) == Array("hello hello hello hello".utf8))
        // A dynamic-Huffman block: 4000 letters drawn with a skewed distribution.
        var x: UInt64 = 1
        let alphabet = Array("eeeeeeettttaaoinshrdlu  ".utf8)
        var text: [UInt8] = []
        for _ in 0..<4000 {
            x = (x &* 1103515245 &+ 12345) & 0x7fff_ffff
            text.append(alphabet[Int((x >> 16) % 24)])
        }
        let stream = Self.hex("2d970baeeb2a0c45a7e2a9590209240412d8f3efda4ecf7d7a6d1302feec8f332d5af3dbbd1f731f163bfa0cdbbbef11b146e76a9ce86be58e99de6f44f76b3d460fbe5ae72fccbaebdba9dfaf852ef6f076f479fbcdba61adb329cfbe587d263b70f5cc0867d55ebd712158c2a9fd8c77b21fef691693cb6ce32c20a0da9a5decf6f37adfdc79bb9388ef8ac6e723835896f1968eed2b9c674edf6ce6da869fbefc902f5f4f1f36958ecee8dc78839f0a7c98763ce3c46ef7ccdde75b2c5f7db1c126bb467c31c60b0ab67afa23a1355edf1697035d255ac438d7b9d77b1fa35d32b8d3ab42a747d327354b8fb4bccf3771796bfda4298fa774df1cd4642a6ff7aca0e8d8b035c8e6d232229b87c691ce5e4158a174a80e011cbf3a617a36c5d8461f6bbfa65075342b2c4f7f468d2ef537eab5831422c6bd8f7e28561579fc83664b4e071b7cb7d41e36edd026baaddacc919d8a2c2d36960e073736fdf2c404608766ed031816215068e07597ba047c8232b533fd45569333d6a602c4c59fb754fbc11a073ce278ece531c75591d8e0362de14663a71751d789958f4934993cc24e243b72ecd89d347b61c35c80061985168a456f3a51a8d2dba9a70be3a15e0491bbb578f30fc85c6cb9d986ef63a8e59ca4aee71b84fb48f6006480f09407eb9c908cf3f2f24b1015244d3d1bb34fdd11bf00973aca0291ee02a191c676930c6dde0b5f40f8bcc52d48d6e669203aa9a85183b5c4af34870b2cecd0851e69f11d312f55e7d0a5941acd698aabf14fbcb218a20e5031385224067cfe683a0da206a97ed8bbeafe3c7b1f4a3b67144054bd2d884a3ac4f62e72f5416db780208cd047d18dd6f6d394387405147b919c5a02464172dc2a7acc677c49108e36bc54535694faf83dda4a120416fc081df51bc653d7367312ee6a4818255b7e9d942c25471348908944ab0a755d8fed421c70980492049ed4653fa1e17dd949a2909aa7834e9bad5fa961146cb4c1126ed6a784fa4be1c2672baecd9434d0fe2e1203e1b9faded30a3330d9a5654d27bbc8904a92e2b40de678ec0e1f122018b287e4e0710c5d04116884a0c6058a10f713c228445f450688842b619edcdb1a8d72f5dc3065d3ed75487656cdc13550015884c9d3ce35c0f46ac73e8a2f4dfb81caa257292c1dfd04fc5573d02af75374e92d8ca7cfe1260a3296ed0174af6a4eb85779bc6cda9307819442a25c3c4d3c6890dc440a725dd2ef22220da4e226f15f048fceaebb90f6a71381ce248ca92e4a453856c2f9aef04c8c25106a6121648be57a62cdad1ff23a48761cb40935a1c6cd25fd9031c61bfdb38909d5ec526f20fb9907e4107c5f1775d549f69f882977ee0448c7d62af820cc3e249e7ec80b694fa939929afd4aa78649b850c9678bed2c1696a60f2ab2a423b757df572277f4a46a79f00fc034703df6a07eb8344f04b01d9f51c304e0d0a094a71a2556226727d79f4ff2b52dc652e8d4c1924eb079497c68a94e6f700418835c49c25daf282e9416163e6548d584b122eac29302058d6c638ba129eb42c169927e001797c810e2d4ff0141139b5e557560799ff00a79d066cf5e56041c46dd2989310a5abeb7c80e60cef278dab924084a2bedf2a8c83a6d95a5413093d576b51dc013289a2d892a9a63e96ac284bc5c1b3c49b365b61a0184a98dc5ecd4f834a7b970f5f1416712c228bd50c27255721902ce3791d4d871962254a00d6344e7aef4571b02013cae1687acf59d23d713af8fd61c1dfdfeec13293557212320022566a9e135a781a683ebabe882f19637a43482b45806ca52559287f4d6e2426e60affdb2d564b5de8e725054aedffd3fcfeb3f3060cb294f75edc86bba4abe34697196e836674d147e6ecd1a74030f8bcbfc610c6bc2572beb7c2e51612690ddb94ecece50228e3cab5361bdc49a224917f2c8c485b9d1e85105c407f7800e932a928a654bb5a5d6ae694ee592eebf96bbb8d0cb0c99718f0631692437537269325c2aa845da9c9e542f385ce4c08f989eb8c4bcc4501afb689053822a98bdbd6eaf590191931841ff78d896448b3277792ddbaaf2b465147dda2a17740d2e1cd06b5c91fe244320c281f4df9c0528d14ab824580ac2287995940688a9b9398f337f491fb660e69a3bf7fc34415aa5649d0edfe3b96f611453a939e7df5d59a90a0bcb8eddecdf102566cd23ef629691821e4d2fe8b9c6b00f4814c486e6382f4f42770159a0ab22234aba65682cda7a3413f5d3e80f739bd50bc52e016748916e55f598abb746f67adbe84afd6862570eccc7780a34d1c1f2228da49e0b1c3f0a8eb2d61bc92a199100023a554f251c1a875941bf6a505383f50f1a2d8949993b868fccc48a7ab709a672b490118b5c5b3b9a9750b826b2c7cd5b630d030754c28bdf2dc995e86a81d1e567673793738abce5e64af0e488026256da7e9f0e1d5e8a11472f0d4c624312e9f6d98c345bf66f7297a7b035f623fd7cbd6221b6774c26ee3237a52ba9004b1f0d35d27f6f517aed2bf4c1d017df9b883c41ef5bf4eaa21f44954baf2ba9f701aa2fb7c0803772c97c2d93c4c3f572f6b4845caa2894db61dc42d765c33a52a55f0aa9691a720966d6e8b6e415f6c7dff507174659014e3334b27e03ae40282fb92e775a4bee122dad26ebf2cb95569a8264562c47aad7ca72c5bd1a8b8e49e935c3469b9a65b1b1a1494ca3268229ad601868ea59d7db1e92cf44d264e545f0efa580dd10daa369a6de904ccf7f83c1a377605aafb72e9fd35b60bbe509479c2d252b93aa89129ec9d13428aeaffe3b347c32b693ca0f")
        #expect((stream[0] >> 1) & 3 == 2)
        #expect(try QCOW2Inflate.inflate(stream, capacity: 4000) == text)
        // Output stops at the capacity (a cluster), wherever the stream is.
        #expect(try QCOW2Inflate.inflate(stream, capacity: 1000) == Array(text[0..<1000]))
    }

    @Test func brokenStreamsAreTypedErrors() {
        let cases: [[UInt8]] = [
            [0x07],                         // block type 3
            [0x01, 0x03, 0x00, 0x00, 0x00], // stored length vs complement
            [0x01, 0x03, 0x00, 0xfc, 0xff], // stored block past the input
            Self.hex("cb48cdc9c957c840"),   // truncated
            [0x03, 0x02],                   // fixed block: distance before the start
            [0x05, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // dynamic, over-subscribed
            [],
        ]
        for c in cases {
            #expect(throws: FormatError.self, "\(c.hex)") { try QCOW2Inflate.inflate(c, capacity: 65536, errorOffset: 0x1000) }
        }
    }
}
