// The VHDX library lands here (issue 2).
import BlockCore
