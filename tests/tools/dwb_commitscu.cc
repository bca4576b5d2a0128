// Test peer: a Storage Commitment Push Model SCU (DCMTK ships none). Sends one N-ACTION for the given
// instances and waits for the N-EVENT-REPORT, either on the same association or, with --listen PORT, after
// releasing it, on a new association the bridge opens to us. Prints:
//   action status 0xNNNN
//   event <type> transaction <uid>
//   committed <sop instance uid>          (one line per Referenced SOP Sequence item)
//   failed <sop instance uid> reason 0xNNNN   (one line per Failed SOP Sequence item)
// usage: dwb_commitscu HOST PORT CALLED_AE CALLING_AE [--listen PORT] [--wait S] CLASS_UID:INSTANCE_UID...
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

void print_event(T_DIMSE_Message &msg, DcmDataset *ds) {
    OFString tuid;
    if (ds) ds->findAndGetOFString(DCM_TransactionUID, tuid);
    printf("event %u transaction %s\n", msg.msg.NEventReportRQ.EventTypeID, tuid.c_str());
    DcmSequenceOfItems *seq = nullptr;
    if (ds && ds->findAndGetSequence(DCM_ReferencedSOPSequence, seq).good() && seq)
        for (unsigned long i = 0; i < seq->card(); i++) {
            OFString uid;
            seq->getItem(i)->findAndGetOFString(DCM_ReferencedSOPInstanceUID, uid);
            printf("committed %s\n", uid.c_str());
        }
    if (ds && ds->findAndGetSequence(DCM_FailedSOPSequence, seq).good() && seq)
        for (unsigned long i = 0; i < seq->card(); i++) {
            OFString uid;
            Uint16 reason = 0;
            seq->getItem(i)->findAndGetOFString(DCM_ReferencedSOPInstanceUID, uid);
            seq->getItem(i)->findAndGetUint16(DCM_FailureReason, reason);
            printf("failed %s reason 0x%04x\n", uid.c_str(), reason);
        }
    fflush(stdout);
}

// Receives one N-EVENT-REPORT on a and answers it. 0 on success.
int take_event(T_ASC_Association *a, int wait_s) {
    T_DIMSE_Message msg;
    T_ASC_PresentationContextID pid = 0;
    OFCondition c = DIMSE_receiveCommand(a, DIMSE_NONBLOCKING, wait_s, &pid, &msg, nullptr);
    if (c.bad() || msg.CommandField != DIMSE_N_EVENT_REPORT_RQ) {
        printf("no event: %s\n", c.bad() ? c.text() : "another command");
        return 1;
    }
    DcmDataset *ds = nullptr;
    if (msg.msg.NEventReportRQ.DataSetType != DIMSE_DATASET_NULL)
        DIMSE_receiveDataSetInMemory(a, DIMSE_BLOCKING, 0, &pid, &ds, nullptr, nullptr);
    print_event(msg, ds);
    delete ds;
    T_DIMSE_Message rsp;
    memset(&rsp, 0, sizeof rsp);
    rsp.CommandField = DIMSE_N_EVENT_REPORT_RSP;
    T_DIMSE_N_EventReportRSP &r = rsp.msg.NEventReportRSP;
    r.MessageIDBeingRespondedTo = msg.msg.NEventReportRQ.MessageID;
    OFStandard::strlcpy(r.AffectedSOPClassUID, msg.msg.NEventReportRQ.AffectedSOPClassUID, sizeof r.AffectedSOPClassUID);
    OFStandard::strlcpy(r.AffectedSOPInstanceUID, msg.msg.NEventReportRQ.AffectedSOPInstanceUID,
                        sizeof r.AffectedSOPInstanceUID);
    r.EventTypeID = msg.msg.NEventReportRQ.EventTypeID;
    r.DimseStatus = STATUS_Success;
    r.DataSetType = DIMSE_DATASET_NULL;
    r.opts = O_NEVENTREPORT_AFFECTEDSOPCLASSUID | O_NEVENTREPORT_AFFECTEDSOPINSTANCEUID | O_NEVENTREPORT_EVENTTYPEID;
    return DIMSE_sendMessageUsingMemoryData(a, pid, &rsp, nullptr, nullptr, nullptr, nullptr).good() ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: dwb_commitscu HOST PORT CALLED_AE CALLING_AE [--listen PORT] [--wait S] CLASS:UID...\n");
        return 2;
    }
    int listen_port = 0, wait_s = 120;
    std::vector<std::string> refs;
    for (int i = 5; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) listen_port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--wait") && i + 1 < argc) wait_s = atoi(argv[++i]);
        else refs.push_back(argv[i]);
    }
    T_ASC_Network *net = nullptr;
    // With --listen, one network both requests and accepts (the report comes on a new association).
    if (ASC_initializeNetwork(listen_port ? NET_ACCEPTORREQUESTOR : NET_REQUESTOR, listen_port, 30, &net).bad()) {
        fprintf(stderr, "cannot set up the network\n");
        return 1;
    }
    T_ASC_Parameters *params = nullptr;
    ASC_createAssociationParameters(&params, 16384);
    ASC_setAPTitles(params, argv[4], argv[3], nullptr);
    std::string peer = std::string(argv[1]) + ":" + argv[2];
    ASC_setPresentationAddresses(params, "localhost", peer.c_str());
    const char *ts[] = {UID_LittleEndianExplicitTransferSyntax};
    ASC_addPresentationContext(params, 1, UID_StorageCommitmentPushModelSOPClass, ts, 1);
    T_ASC_Association *a = nullptr;
    if (ASC_requestAssociation(net, params, &a).bad()) {
        printf("association failed\n");
        return 1;
    }
    T_ASC_PresentationContextID pid = ASC_findAcceptedPresentationContextID(a, UID_StorageCommitmentPushModelSOPClass);
    if (!pid) {
        printf("storage commitment not accepted\n");
        return 1;
    }
    DcmDataset info;
    char tuid[65];
    dcmGenerateUniqueIdentifier(tuid);
    info.putAndInsertString(DCM_TransactionUID, tuid);
    for (const std::string &r : refs) {
        size_t colon = r.find(':');
        DcmItem *item = nullptr;
        info.findOrCreateSequenceItem(DCM_ReferencedSOPSequence, item, -2);
        item->putAndInsertString(DCM_ReferencedSOPClassUID, r.substr(0, colon).c_str());
        item->putAndInsertString(DCM_ReferencedSOPInstanceUID, r.substr(colon + 1).c_str());
    }
    T_DIMSE_Message req;
    memset(&req, 0, sizeof req);
    req.CommandField = DIMSE_N_ACTION_RQ;
    T_DIMSE_N_ActionRQ &rq = req.msg.NActionRQ;
    rq.MessageID = a->nextMsgID++;
    OFStandard::strlcpy(rq.RequestedSOPClassUID, UID_StorageCommitmentPushModelSOPClass, sizeof rq.RequestedSOPClassUID);
    OFStandard::strlcpy(rq.RequestedSOPInstanceUID, UID_StorageCommitmentPushModelSOPInstance,
                        sizeof rq.RequestedSOPInstanceUID);
    rq.ActionTypeID = 1;
    rq.DataSetType = DIMSE_DATASET_PRESENT;
    if (DIMSE_sendMessageUsingMemoryData(a, pid, &req, nullptr, &info, nullptr, nullptr).bad()) {
        printf("sending N-ACTION failed\n");
        return 1;
    }
    T_DIMSE_Message rsp;
    T_ASC_PresentationContextID rpid = 0;
    if (DIMSE_receiveCommand(a, DIMSE_BLOCKING, 0, &rpid, &rsp, nullptr).bad() ||
        rsp.CommandField != DIMSE_N_ACTION_RSP) {
        printf("no N-ACTION response\n");
        return 1;
    }
    printf("action status 0x%04x transaction %s\n", rsp.msg.NActionRSP.DimseStatus, tuid);
    fflush(stdout);
    int rc = 0;
    if (!listen_port) {
        rc = take_event(a, wait_s);
        ASC_releaseAssociation(a);
        ASC_destroyAssociation(&a);
    } else {
        ASC_releaseAssociation(a);
        ASC_destroyAssociation(&a);
        printf("released; listening on %d\n", listen_port);
        fflush(stdout);
        T_ASC_Association *in = nullptr;
        if (ASC_receiveAssociation(net, &in, 16384, nullptr, nullptr, OFFalse, DUL_NOBLOCK, wait_s).bad()) {
            printf("no association came\n");
            return 1;
        }
        const char *sc[] = {UID_StorageCommitmentPushModelSOPClass};
        const char *tss[] = {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax};
        ASC_acceptContextsWithPreferredTransferSyntaxes(in->params, sc, 1, tss, 2, ASC_SC_ROLE_SCP);
        ASC_acknowledgeAssociation(in);
        rc = take_event(in, wait_s);
        T_DIMSE_Message rel;
        T_ASC_PresentationContextID p2 = 0;
        if (DIMSE_receiveCommand(in, DIMSE_BLOCKING, 0, &p2, &rel, nullptr) == DUL_PEERREQUESTEDRELEASE)
            ASC_acknowledgeRelease(in);
        ASC_dropSCPAssociation(in);
        ASC_destroyAssociation(&in);
    }
    ASC_dropNetwork(&net);
    return rc;
}
