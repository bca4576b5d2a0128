// libFuzzer: the DIMSE data set reader path (scp/dwb_receive.cc) on arbitrary bytes: the nesting check, then
// DCMTK's parser, then the conversion a C-FIND identifier goes through. The oracle: whatever the check lets
// through, DCMTK must not nest deeper than the check's limit (a small one here, so that short inputs reach it).
// The first byte picks the transfer syntax.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdatset.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcsequen.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/oflog/oflog.h"

#include <cstdint>
#include <cstdlib>

#include "dwb_dcmconv.hh"

extern "C" {
#include "dwb_attrs.h"
#include "dwb_nesting.h"
}

namespace {

const unsigned kLimit = 6;

unsigned depth_of(DcmItem *item, unsigned level) {
    unsigned deepest = level;
    for (DcmObject *o = item->nextInContainer(nullptr); o; o = item->nextInContainer(o)) {
        if (o->ident() != EVR_SQ) continue;
        DcmSequenceOfItems *sq = static_cast<DcmSequenceOfItems *>(o);
        for (DcmObject *k = sq->nextInContainer(nullptr); k; k = sq->nextInContainer(k)) {
            unsigned d = depth_of(static_cast<DcmItem *>(k), level + 1);
            if (d > deepest) deepest = d;
        }
    }
    return deepest;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static bool quiet = (OFLog::configure(OFLogger::FATAL_LOG_LEVEL), true);
    (void)quiet;
    if (size < 1) return 0;
    static const char *const syntaxes[] = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                                           "1.2.840.10008.1.2.4.50"};
    const char *ts = syntaxes[data[0] % 4];
    data++;
    size--;
    if (dwb_nesting_check_xfer(data, size, ts, kLimit, nullptr) != DWB_OK) return 0;
    DcmInputBufferStream in;
    in.setBuffer(data, (offile_off_t)size);
    in.setEos();
    DcmDataset ds;
    ds.transferInit();
    OFCondition c = ds.read(in, DcmXfer(ts).getXfer(), EGL_noChange);
    ds.transferEnd();
    if (depth_of(&ds, 0) > kLimit) abort(); // the check let through what DCMTK nests deeper
    if (c.bad()) return 0;
    dwb_attrs *a = dwb_attrs_new();
    if (a) {
        (void)dwb_dcm_to_attrs(&ds, a, nullptr);
        dwb_attrs_free(a);
    }
    return 0;
}
