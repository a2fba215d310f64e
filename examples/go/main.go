// Command resume runs the resume scenario through a Go client generated from
// proto/ with plain protoc (protoc-gen-go + protoc-gen-go-grpc; the files'
// go_package is "reprise.dev/go/reprise/v1").
//
// Against a running `reprise dev` (server and reference worker in one
// process, on this machine: the shell tasks below run here), it creates a
// pipeline build -> canary (four parallel workflows; `smoke` fails until a
// marker file exists) -> rollout, starts it and watches it fail, previews and
// runs a Resume from canary, watches the resume succeed, lists the chain's
// history, and decodes the error details of a refused Resume. Prints each
// check, then `N passed, M failed`; exits non-zero on any failure.
//
// REPRISE_ADDRESS (default 127.0.0.1:50051) names the server,
// REPRISE_EXAMPLE_DIR a directory the worker can see (default: a temp dir).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "reprise.dev/go/reprise/v1"
)

type checks struct{ passed, failed int }

func (c *checks) check(ok bool, what string) bool {
	if ok {
		c.passed++
		fmt.Println("ok  ", what)
	} else {
		c.failed++
		fmt.Println("FAIL", what)
	}
	return ok
}

// reasonName is ErrorInfo.reason for an ErrorReason value: its name without
// the ERROR_REASON_ prefix.
func reasonName(r pb.ErrorReason) string {
	return strings.TrimPrefix(r.String(), "ERROR_REASON_")
}

// watchUntilFinal follows WatchExecution until the stream ends: the
// execution reached a final state.
func watchUntilFinal(ctx context.Context, executions pb.ExecutionServiceClient, id string) (*pb.Execution, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	stream, err := executions.WatchExecution(ctx, &pb.WatchExecutionRequest{ExecutionId: id})
	if err != nil {
		return nil, err
	}
	var last *pb.Execution
	for {
		message, err := stream.Recv()
		if err == io.EOF {
			return last, nil
		}
		if err != nil {
			return nil, err
		}
		last = message.Execution
	}
}

func stage(name string, env *pb.Environment, workflows ...[2]string) *pb.Stage {
	set := &pb.WorkflowStage{}
	for _, w := range workflows {
		set.Workflows = append(set.Workflows, &pb.Workflow{Name: w[0], Command: w[1]})
	}
	return &pb.Stage{Name: name, Environment: env, Kind: &pb.Stage_Workflows{Workflows: set}}
}

func scenario(c *checks, address, workdir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dial, cancelDial := context.WithTimeout(ctx, 30*time.Second)
	defer cancelDial()
	conn, err := grpc.DialContext(dial, address, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return err
	}
	defer conn.Close()
	pipelines := pb.NewPipelineServiceClient(conn)
	executions := pb.NewExecutionServiceClient(conn)

	marker := filepath.Join(workdir, "go-fixed")
	staging := &pb.Environment{Name: "staging", Type: pb.EnvironmentType_ENVIRONMENT_TYPE_NON_PROD}
	prod := &pb.Environment{Name: "prod", Type: pb.EnvironmentType_ENVIRONMENT_TYPE_PROD}
	definition := &pb.PipelineDefinition{Description: "resume scenario (Go example)", Stages: []*pb.Stage{
		stage("build", staging, [2]string{"compile", "echo compiled"}),
		stage("canary", prod, [2]string{"eu-1", "echo eu-1"}, [2]string{"eu-2", "echo eu-2"},
			[2]string{"us-1", "echo us-1"}, [2]string{"smoke", fmt.Sprintf("test -f '%s'", marker)}),
		stage("rollout", prod, [2]string{"all", "echo deployed $REPRISE_ARTIFACT_WEB"}),
	}}
	created, err := pipelines.CreatePipeline(ctx, &pb.CreatePipelineRequest{
		Application: "shop", Name: fmt.Sprintf("resume-go-%d", time.Now().UnixNano()), Definition: definition})
	if err != nil {
		return err
	}
	pipeline := created.Pipeline
	c.check(pipeline.Version == 1 && len(pipeline.Definition.Stages) == 3, "CreatePipeline: version 1 with 3 stages")

	started, err := executions.StartExecution(ctx, &pb.StartExecutionRequest{
		PipelineId: pipeline.Id, Artifacts: map[string]string{"web": "1.2.3"}, RequestId: fmt.Sprintf("go-%d", time.Now().UnixNano())})
	if err != nil {
		return err
	}
	first, err := watchUntilFinal(ctx, executions, started.Execution.Id)
	if err != nil {
		return err
	}
	c.check(first.Status == pb.ExecutionStatus_EXECUTION_STATUS_FAILED, "WatchExecution: the first attempt FAILED")
	canary := first.Stages[1]
	siblingsOK := true
	for _, w := range canary.Workflows {
		if w.Name != "smoke" && w.Status != pb.WorkflowStatus_WORKFLOW_STATUS_SUCCEEDED {
			siblingsOK = false
		}
	}
	c.check(canary.Status == pb.StageStatus_STAGE_STATUS_FAILED && siblingsOK,
		"canary FAILED: smoke failed, its three parallel siblings succeeded")

	got, err := executions.GetExecution(ctx, &pb.GetExecutionRequest{ExecutionId: first.Id})
	if err != nil {
		return err
	}
	rollout := got.Execution.Stages[2].ResumePoint
	c.check(got.Execution.Stages[1].ResumePoint.Resumable && !rollout.Resumable &&
		rollout.Block == pb.ErrorReason_ERROR_REASON_STAGE_NOT_REACHED,
		"GetExecution: canary is a resume point, rollout is not (STAGE_NOT_REACHED)")

	if err := os.WriteFile(marker, nil, 0o644); err != nil { // "fix" the smoke test
		return err
	}

	fromCanary := &pb.ResumeRequest_StageName{StageName: "canary"}
	preview, err := executions.Resume(ctx, &pb.ResumeRequest{ExecutionId: first.Id, FromStage: fromCanary, ValidateOnly: true})
	if err != nil {
		return err
	}
	plan := preview.Plan
	c.check(preview.Execution == nil && len(plan) == 3 &&
		plan[0].Action == pb.PlannedAction_PLANNED_ACTION_CARRY_OVER && plan[1].Action == pb.PlannedAction_PLANNED_ACTION_RUN &&
		plan[2].Action == pb.PlannedAction_PLANNED_ACTION_RUN,
		"Resume validate_only: creates nothing; carries build over, runs canary and rollout")

	resumed, err := executions.Resume(ctx, &pb.ResumeRequest{ExecutionId: first.Id, FromStage: fromCanary,
		RequestId: fmt.Sprintf("go-%d", time.Now().UnixNano()), Reason: "smoke test fixed"})
	if err != nil {
		return err
	}
	c.check(resumed.Execution.Attempt == 2 && resumed.Execution.ChainId == first.Id,
		"Resume: attempt 2 of the first execution's chain")

	second, err := watchUntilFinal(ctx, executions, resumed.Execution.Id)
	if err != nil {
		return err
	}
	c.check(second.Status == pb.ExecutionStatus_EXECUTION_STATUS_SUCCEEDED, "WatchExecution: the resume SUCCEEDED")
	c.check(second.Stages[0].CarriedOver && second.Stages[0].CarriedFromExecutionId == first.Id,
		"build was carried over from the first attempt")
	rerun := second.Stages[1].Workflows
	allOK := len(rerun) == 4
	for _, w := range rerun {
		allOK = allOK && w.Status == pb.WorkflowStatus_WORKFLOW_STATUS_SUCCEEDED
	}
	c.check(allOK, "all four canary workflows ran again and succeeded")

	history, err := executions.ListHistory(ctx, &pb.ListHistoryRequest{ExecutionId: first.Id})
	if err != nil {
		return err
	}
	e := history.Entries
	c.check(len(e) == 2 && e[0].ExecutionId == second.Id && e[0].Attempt == 2 && e[1].ExecutionId == first.Id &&
		e[0].ResumedFrom.GetStageName() == "canary",
		"ListHistory: 2 attempts, newest first; the resume came from canary")

	// A refused call: the first execution is no longer the latest of its chain.
	_, err = executions.Resume(ctx, &pb.ResumeRequest{ExecutionId: first.Id, FromStage: fromCanary})
	st, _ := status.FromError(err)
	c.check(err != nil && st.Code() == codes.FailedPrecondition, fmt.Sprintf("refused: FAILED_PRECONDITION (%s)", st.Message()))
	var info *errdetails.ErrorInfo
	var failure *errdetails.PreconditionFailure
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.PreconditionFailure:
			failure = d
		}
	}
	c.check(info != nil && info.Domain == "reprise.v1" &&
		info.Reason == reasonName(pb.ErrorReason_ERROR_REASON_NOT_LATEST_IN_CHAIN) &&
		info.Metadata["latest_execution_id"] == second.Id,
		fmt.Sprintf("ErrorInfo: reason %s, latest_execution_id names the resume", info.GetReason()))
	c.check(failure != nil && len(failure.Violations) > 0 && failure.Violations[0].Type == info.GetReason(),
		"PreconditionFailure: the same reason as its violation type")
	old, err := executions.GetExecution(ctx, &pb.GetExecutionRequest{ExecutionId: first.Id})
	if err != nil {
		return err
	}
	c.check(reasonName(old.Execution.Stages[1].ResumePoint.Block) == info.GetReason(),
		"GetExecution's resume point names the same reason")
	return nil
}

func main() {
	address := os.Getenv("REPRISE_ADDRESS")
	if address == "" {
		address = "127.0.0.1:50051"
	}
	workdir := os.Getenv("REPRISE_EXAMPLE_DIR")
	if workdir == "" {
		workdir, _ = os.MkdirTemp("", "reprise-go-")
	}
	c := &checks{}
	if err := scenario(c, address, workdir); err != nil {
		c.check(false, err.Error())
	}
	fmt.Printf("go-example: %d passed, %d failed\n", c.passed, c.failed)
	if c.failed > 0 {
		os.Exit(1)
	}
}
