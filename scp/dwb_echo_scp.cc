// DCMTK adapter for C-ECHO (Verification), on the bridge's own AE title and on every upstream's.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/dimse.h"

#include "dwb_assoc.hh"

OFCondition dwb_handle_echo(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid) {
    DWB_DEBUG(&ctx->log, "C-ECHO");
    dwb_count_response("C-ECHO", STATUS_Success);
    return DIMSE_sendEchoResponse(ctx->assoc, pid, &msg->msg.CEchoRQ, STATUS_Success, nullptr);
}
