// Test peer: a C-GET SCU that sends C-CANCEL in the middle of a sub-operation, i.e. after receiving the Nth
// C-STORE request and before answering it (getscu cannot). Then it sends a C-ECHO on the same association to
// show that it survived. Prints:
//   store <n>                 per C-STORE sub-operation received
//   cancel sent at <s>        CLOCK_MONOTONIC seconds (Python's time.monotonic()), for the test to count what the
//                             bridge asked its stores after that
//   get status 0xNNNN completed C failed F remaining R   per C-GET response
//   echo status 0xNNNN        (or "echo failed ...")
// usage: dwb_getcancel HOST PORT CALLED_AE STUDY_UID CANCEL_AFTER [SERIES_UID]   (a SERIES_UID: series level)
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <time.h>

int main(int argc, char **argv) {
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: dwb_getcancel HOST PORT CALLED_AE STUDY_UID CANCEL_AFTER [SERIES_UID]\n");
        return 2;
    }
    int cancel_after = atoi(argv[5]);
    T_ASC_Network *net = nullptr;
    ASC_initializeNetwork(NET_REQUESTOR, 0, 30, &net);
    T_ASC_Parameters *params = nullptr;
    ASC_createAssociationParameters(&params, 16384);
    ASC_setAPTitles(params, "GETCANCEL", argv[3], nullptr);
    std::string peer = std::string(argv[1]) + ":" + argv[2];
    ASC_setPresentationAddresses(params, "localhost", peer.c_str());
    const char *ts[] = {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax};
    ASC_addPresentationContext(params, 1, UID_GETStudyRootQueryRetrieveInformationModel, ts, 2);
    ASC_addPresentationContext(params, 3, UID_VerificationSOPClass, ts, 2);
    ASC_addPresentationContext(params, 5, UID_CTImageStorage, ts, 2, ASC_SC_ROLE_SCP);
    ASC_addPresentationContext(params, 7, UID_MRImageStorage, ts, 2, ASC_SC_ROLE_SCP);
    T_ASC_Association *a = nullptr;
    if (ASC_requestAssociation(net, params, &a).bad()) {
        printf("association failed\n");
        return 1;
    }
    DcmDataset ident;
    ident.putAndInsertString(DCM_QueryRetrieveLevel, argc == 7 ? "SERIES" : "STUDY");
    ident.putAndInsertString(DCM_StudyInstanceUID, argv[4]);
    if (argc == 7) ident.putAndInsertString(DCM_SeriesInstanceUID, argv[6]);
    T_DIMSE_Message req;
    memset(&req, 0, sizeof req);
    req.CommandField = DIMSE_C_GET_RQ;
    T_DIMSE_C_GetRQ &g = req.msg.CGetRQ;
    DIC_US get_id = a->nextMsgID++;
    g.MessageID = get_id;
    OFStandard::strlcpy(g.AffectedSOPClassUID, UID_GETStudyRootQueryRetrieveInformationModel, sizeof g.AffectedSOPClassUID);
    g.Priority = DIMSE_PRIORITY_MEDIUM;
    g.DataSetType = DIMSE_DATASET_PRESENT;
    if (DIMSE_sendMessageUsingMemoryData(a, 1, &req, nullptr, &ident, nullptr, nullptr).bad()) {
        printf("sending C-GET failed\n");
        return 1;
    }
    int stores = 0, rc = 1;
    for (;;) {
        T_DIMSE_Message msg;
        T_ASC_PresentationContextID pid = 0;
        DcmDataset *stat = nullptr;
        OFCondition c = DIMSE_receiveCommand(a, DIMSE_BLOCKING, 0, &pid, &msg, &stat);
        delete stat;
        if (c.bad()) {
            printf("receive failed: %s\n", c.text());
            return 1;
        }
        if (msg.CommandField == DIMSE_C_STORE_RQ) {
            DcmDataset *ds = nullptr;
            DIMSE_receiveDataSetInMemory(a, DIMSE_BLOCKING, 0, &pid, &ds, nullptr, nullptr);
            delete ds;
            stores++;
            printf("store %d\n", stores);
            if (stores == cancel_after) {
                // The cancel comes first, the sub-operation's answer after it: the bridge is waiting for that.
                DIMSE_sendCancelRequest(a, 1, get_id);
                struct timespec ts_now;
                clock_gettime(CLOCK_MONOTONIC, &ts_now);
                printf("cancel sent at %.6f\n", (double)ts_now.tv_sec + ts_now.tv_nsec / 1e9);
            }
            T_DIMSE_Message rsp;
            memset(&rsp, 0, sizeof rsp);
            rsp.CommandField = DIMSE_C_STORE_RSP;
            T_DIMSE_C_StoreRSP &sr = rsp.msg.CStoreRSP;
            sr.MessageIDBeingRespondedTo = msg.msg.CStoreRQ.MessageID;
            OFStandard::strlcpy(sr.AffectedSOPClassUID, msg.msg.CStoreRQ.AffectedSOPClassUID, sizeof sr.AffectedSOPClassUID);
            OFStandard::strlcpy(sr.AffectedSOPInstanceUID, msg.msg.CStoreRQ.AffectedSOPInstanceUID,
                                sizeof sr.AffectedSOPInstanceUID);
            sr.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;
            sr.DataSetType = DIMSE_DATASET_NULL;
            sr.DimseStatus = STATUS_Success;
            fflush(stdout);
            if (DIMSE_sendMessageUsingMemoryData(a, pid, &rsp, nullptr, nullptr, nullptr, nullptr).bad()) {
                printf("store response failed\n");
                return 1;
            }
        } else if (msg.CommandField == DIMSE_C_GET_RSP) {
            T_DIMSE_C_GetRSP &r = msg.msg.CGetRSP;
            printf("get status 0x%04x completed %u failed %u remaining %u\n", r.DimseStatus,
                   r.NumberOfCompletedSubOperations, r.NumberOfFailedSubOperations, r.NumberOfRemainingSubOperations);
            fflush(stdout);
            if (r.DimseStatus != STATUS_Pending) break;
        } else {
            printf("unexpected command 0x%04x\n", (unsigned)msg.CommandField);
            return 1;
        }
    }
    DIC_US status = 0;
    DcmDataset *detail = nullptr;
    OFCondition c = DIMSE_echoUser(a, a->nextMsgID++, DIMSE_BLOCKING, 0, &status, &detail);
    delete detail;
    if (c.good()) {
        printf("echo status 0x%04x\n", status);
        rc = 0;
    } else {
        printf("echo failed: %s\n", c.text());
    }
    ASC_releaseAssociation(a);
    ASC_destroyAssociation(&a);
    ASC_dropNetwork(&net);
    return rc;
}
