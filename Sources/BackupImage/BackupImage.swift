// The backup image format lands here (issue 3).
import BlockCore
